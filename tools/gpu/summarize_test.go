// Package gpu holds the scripts for a lent GPU host (device_check.sh) and for reading what
// they bring back (summarize.py); this test checks the summary's arithmetic on a made-up
// sitting.
package gpu

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestSummarize(t *testing.T) {
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("needs python3")
	}
	d := t.TempDir()
	write := func(name, s string) {
		if err := os.WriteFile(filepath.Join(d, name), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("results.jsonl", `{"variant":"fused_choice","fused":"bn,act","cuda_kernels":"scalar","failed":"PackRows"}
{"variant":"fp16_graph","step_ms_median":10.5,"img_per_s":761.9,"device_mem_mb":4096,"fused":"bn,act","cuda_kernels":"scalar"}
{"impl":"pytorch","mode":"train","amp":false,"ms_per_step":23.1,"img_per_s":346,"peak_mem_gb":7.44}
{"impl":"pytorch","mode":"train","amp":true,"channels_last":true,"ms_per_step":21.0,"img_per_s":381,"peak_mem_gb":3.1}
not json
{"variant":"train_gpu_all_43","epoch":1,"val":{"iou":0.5}}
{"variant":"train_gpu_all_43","epoch":30,"val":{"iou":0.785}}
{"variant":"train_gpu_all_44","epoch":30,"val":{"iou":0.740}}
`)
	write("log.txt", "=== 10:00:00 host: vm NVIDIA H100, 580, 81559 MiB\n=== 10:00:09 fused choice: CARDSEG_FUSED_OPS=bn,act CARDSEG_CUDA_KERNELS=scalar (failed: PackRows)\n")
	write("smi.csv", "2026/11/26 10:00:01.000, 0 MiB, 0 %\n2026/11/26 10:00:02.000, 5120 MiB, 99 %\n2026/11/26 10:00:03.000, 100 MiB, 3 %\n")
	out, err := exec.Command(py, "summarize.py", d).CombinedOutput()
	if err != nil {
		t.Fatalf("summarize.py: %v\n%s", err, out)
	}
	s := string(out)
	for _, want := range []string{
		"fused choice: CARDSEG_FUSED_OPS=bn,act",
		"PyTorch's best (AMP + channels_last) 21.00 ms: 2.00x",
		"peak device memory: 5120 MiB",
		"final 0.785  best 0.785  FP32 seed 43 0.781  diff +0.004",
		"final 0.740  best 0.740  FP32 seed 44 0.750  diff -0.010",
		"train_gpu_all: mean difference from FP32 over 2 seeds -0.003",
		"results.jsonl:5: not JSON",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("summary lacks %q:\n%s", want, s)
		}
	}
}
