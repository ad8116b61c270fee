package main

import (
	"bytes"
	"os"
	"testing"
)

// TestIndexIsCurrent regenerates the slot numbers from the header go.mod pins and compares
// them with the committed runtime/ortapi_index.h, so a dependency bump cannot leave the
// device layer calling the wrong slots.
func TestIndexIsCurrent(t *testing.T) {
	hp, err := headerPath()
	if err != nil {
		t.Skip(err)
	}
	h, err := os.ReadFile(hp)
	if err != nil {
		t.Skip(err)
	}
	want, err := render(string(h))
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile("../../../runtime/ortapi_index.h")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("runtime/ortapi_index.h is stale: run go run ./tools/gen/ortapi")
	}
}

func TestSlotsReadsEveryForm(t *testing.T) {
	h := "\nstruct OrtApi {\n" +
		"  OrtStatus*(ORT_API_CALL* CreateStatus)(OrtErrorCode code, _In_ const char* msg)NO_EXCEPTION;\n" +
		"  /* comment; with a semicolon */\n" +
		"  ORT_API2_STATUS(CreateEnv, OrtLoggingLevel l, _Outptr_ OrtEnv** out); // trailing; note\n" +
		"  ORT_CLASS_RELEASE(Env);\n" +
		"  ORT_API_T(uint32_t, MemoryInfoGetVendorId, _In_ const OrtMemoryInfo* ptr);\n" +
		"};\n"
	got, err := slots(h)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"CreateStatus", "CreateEnv", "ReleaseEnv", "MemoryInfoGetVendorId"}
	if len(got) != len(want) {
		t.Fatalf("slots = %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("slots = %v, want %v", got, want)
		}
	}
	if _, err := slots(h[:len(h)-3]); err == nil {
		t.Fatal("unclosed struct accepted")
	}
}
