package step_test

import (
	"testing"

	"github.com/cardseg-ort/cardseg-ort/graphs"
)

// emulateHalf serialises g with float16 rounding emulated (graphs.Graph.MarshalEmulatingHalf).
func emulateHalf(t *testing.T, g *graphs.Graph) []byte {
	t.Helper()
	b, err := g.MarshalEmulatingHalf(nil)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
