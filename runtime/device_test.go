package runtime_test

import (
	"testing"

	"github.com/cardseg-ort/cardseg-ort/graphs"
	"github.com/cardseg-ort/cardseg-ort/runtime"
)

// counterModel: inputs x float32 [4], s float32 [4], lr float32 scalar; outputs
// y = x·2 + s and s.next = s + lr — the shape of a train step (a batch in, state carried).
func counterModel(t *testing.T) []byte {
	t.Helper()
	g := graphs.New("counter")
	err := graphs.Build(func() error {
		x := g.Input("x", graphs.Float, graphs.Shape{4})
		s := g.Input("s", graphs.Float, graphs.Shape{4})
		lr := g.Input("lr", graphs.Float, graphs.Shape{})
		g.Output("y", graphs.Add(graphs.Mul(x, graphs.Scalar(g, 2)), s))
		g.Output("s.next", graphs.Add(s, lr))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	b, err := g.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestDeviceSessionPingPong carries state between two fixed bindings (A reads s0 and writes
// s1, B the reverse), uploads batches asynchronously from a staging buffer and checks every
// value; on the CPU provider it exercises the whole device path but the CUDA copies.
func TestDeviceSessionPingPong(t *testing.T) {
	requireORT(t)
	pingPong(t, runtime.DeviceOptions{Provider: runtime.ProviderCPU, IntraOpThreads: 1})
	// Without the memory pattern (what CPU training uses) the same values flow.
	pingPong(t, runtime.DeviceOptions{Provider: runtime.ProviderCPU, IntraOpThreads: 1, DisableMemPattern: true})
}

// TestCUDADeviceSessionGraphs: the same on the GPU with CUDA graphs — each binding's graph
// is captured once and replayed; values must keep flowing through the ping-pong state.
func TestCUDADeviceSessionGraphs(t *testing.T) {
	requireORT(t)
	if r := runtime.CheckCUDA(); !r.Usable {
		t.Skip("no usable CUDA: " + r.Problem)
	}
	pingPong(t, runtime.DeviceOptions{Provider: runtime.ProviderCUDA})
	pingPong(t, runtime.DeviceOptions{Provider: runtime.ProviderCUDA, CUDAGraph: true})
}

func pingPong(t *testing.T, opts runtime.DeviceOptions) {
	s, err := runtime.NewDeviceSession("counter", counterModel(t), opts)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	alloc := func(name string) *runtime.DeviceTensor {
		d, err := s.NewTensorFor(name)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	x := [2]*runtime.DeviceTensor{alloc("x"), alloc("x")}
	st := [2]*runtime.DeviceTensor{alloc("s"), alloc("s")}
	lr, y := alloc("lr"), alloc("y")
	var bind [2]*runtime.Binding
	for i := range bind {
		bind[i], err = s.NewBinding(i, map[string]*runtime.DeviceTensor{"x": x[i], "s": st[i], "lr": lr},
			map[string]*runtime.DeviceTensor{"y": y, "s.next": st[1-i]})
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := st[0].Upload(runtime.MustNew([]int64{4}, []float32{1, 2, 3, 4})); err != nil {
		t.Fatal(err)
	}
	stage, err := s.NewHostBuffer(x[0].Bytes())
	if err != nil {
		t.Fatal(err)
	}
	defer stage.Free()
	want := []float32{1, 2, 3, 4}
	for k := 0; k < 7; k++ {
		copy(stage.Float32s(), []float32{float32(k), 0, -1, 10})
		if err := x[k%2].UploadAsync(stage); err != nil {
			t.Fatal(err)
		}
		if err := lr.Upload(runtime.Scalar(float32(0.5))); err != nil {
			t.Fatal(err)
		}
		if err := s.WaitUploads(); err != nil {
			t.Fatal(err)
		}
		if err := s.Run(bind[k%2]); err != nil {
			t.Fatal(err)
		}
		got, err := y.Fetch()
		if err != nil {
			t.Fatal(err)
		}
		in := []float32{float32(k), 0, -1, 10}
		for i, v := range runtime.Data[float32](got) {
			if v != in[i]*2+want[i] {
				t.Fatalf("step %d: y[%d] = %v, want %v", k, i, v, in[i]*2+want[i])
			}
		}
		for i := range want {
			want[i] += 0.5
		}
	}
	final, err := st[1].Fetch() // seven runs: the state ends in s1
	if err != nil {
		t.Fatal(err)
	}
	for i, v := range runtime.Data[float32](final) {
		if v != want[i] {
			t.Fatalf("state[%d] = %v after 7 runs, want %v", i, v, want[i])
		}
	}
}

func TestDeviceSessionErrors(t *testing.T) {
	requireORT(t)
	s, err := runtime.NewDeviceSession("counter", counterModel(t), runtime.DeviceOptions{Provider: runtime.ProviderCPU})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	x, _ := s.NewTensorFor("x")
	if _, err := s.NewBinding(0, map[string]*runtime.DeviceTensor{"x": x}, nil); err == nil {
		t.Fatal("binding with unbound inputs accepted")
	}
	if err := x.Upload(runtime.MustNew([]int64{3}, []float32{1, 2, 3})); err == nil {
		t.Fatal("upload of the wrong shape accepted")
	}
	if _, err := s.NewTensorFor("nope"); err == nil {
		t.Fatal("tensor for a missing name accepted")
	}
	if _, err := runtime.NewDeviceSession("bad", []byte("not a model"), runtime.DeviceOptions{Provider: runtime.ProviderCPU}); err == nil {
		t.Fatal("garbage model accepted")
	}
	if _, err := runtime.NewDeviceSession("counter", counterModel(t), runtime.DeviceOptions{Provider: runtime.ProviderCPU, CUDAGraph: true}); err == nil {
		t.Fatal("CUDA graphs on the CPU provider accepted")
	}
}
