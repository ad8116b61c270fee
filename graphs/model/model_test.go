package model

import "testing"

func TestParameterCount(t *testing.T) {
	a := MobileNetV3Large(1.0, 2)
	if got := a.TrainableCount(); got != 3218308 {
		t.Fatalf("trainable parameters %d, want 3218308 (torchvision lraspp_mobilenet_v3_large, 2 classes)", got)
	}
	if a.LowTap != 4 || a.LowChannels() != 40 || a.LastConv != 960 || a.OutputStride() != 16 {
		t.Fatalf("low tap %d (%d ch), last conv %d, stride %d", a.LowTap, a.LowChannels(), a.LastConv, a.OutputStride())
	}
}
