// Command benchfmt reads `go test -json` events on stdin and prints the benchmark result lines,
// so `just bench` shows readable results while bench.json keeps the machine-readable record.
// It imports only the standard library.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"strings"
)

type event struct {
	Action  string
	Package string
	Output  string
}

func main() {
	sc := bufio.NewScanner(os.Stdin)
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	failed := false
	for sc.Scan() {
		var e event
		if json.Unmarshal(sc.Bytes(), &e) != nil {
			continue
		}
		out := strings.TrimRight(e.Output, "\n")
		switch {
		case e.Action == "output" && strings.HasPrefix(out, "Benchmark") && strings.Contains(out, "ns/op"):
			fmt.Printf("%-40s %s\n", e.Package, out)
		case e.Action == "output" && strings.HasPrefix(out, "--- FAIL"):
			fmt.Println(e.Package, out)
		case e.Action == "fail" && e.Package != "":
			failed = true
		}
	}
	if failed {
		os.Exit(1)
	}
}
