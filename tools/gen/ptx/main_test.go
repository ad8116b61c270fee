package main

import (
	"bytes"
	"os"
	"strings"
	"testing"
)

// TestPTXIsCurrent recompiles the kernels and compares with the committed header, so an edit
// to bn.cu cannot ship with stale PTX. It needs clang (skips without it; CI has none).
func TestPTXIsCurrent(t *testing.T) {
	cc, err := clang()
	if err != nil {
		t.Skip(err)
	}
	ptx, err := compile(cc, "../../../"+src)
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile("../../../" + dest)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, render(ptx)) {
		t.Fatal(dest + " is stale: run go run ./tools/gen/ptx")
	}
}

func TestRenderEscapes(t *testing.T) {
	h := string(render([]byte("a\t\"b\"\\c\n.entry k(\n")))
	for _, want := range []string{`"a\t\"b\"\\c\n"`, `".entry k(\n"`, "static const char cardseg_bn_ptx[] ="} {
		if !strings.Contains(h, want) {
			t.Errorf("render output lacks %s:\n%s", want, h)
		}
	}
}
