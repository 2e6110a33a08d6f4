package deptest

import (
	"go/ast"
	"go/build"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
)

const module = "github.com/epost-mail/epost/"

// cores are the deterministic protocol state machines. They get time,
// randomness, network and disk only through internal/env.
var cores = []string{"overlay", "past", "glacier", "post", "mailbox"}

// forbidden in cores: durations inside cores are env.Duration ticks.
var forbidden = []string{"net", "os", "sync", "time", "math/rand", "crypto/rand", "syscall", "unsafe", "runtime"}

// pureParsers are packages below a forbidden path that only parse text:
// no sockets, clock or randomness (net/mail reads a From header the way
// mail clients do).
var pureParsers = []string{"net/mail"}

// layer gives each internal package its height; a package may import only
// internal packages strictly below it. A new package must be added here,
// which is the moment to decide where it sits.
var layer = map[string]int{
	"id":        0,
	"wire":      1,
	"env":       1,
	"sim":       2,
	"identity":  2,
	"store":     3,
	"transport": 3,
	"overlay":   3,
	"past":      4,
	"glacier":   5,
	"post":      6,
	"mailbox":   7,
	"imapd":     8,
	"smtpd":     8,
	"gateway":   8,
	"mailnet":   7,
	"mailbench": 8,
	"scenario":  9,
	"node":      10,
	"demo":      11,
	"deptest":   99,
}

// coreMayNotImport lists internal packages below a core that still must
// not leak into it: the simulator engine and the real runtime's parts.
var coreMayNotImport = []string{"sim", "store", "transport"}

func root(t *testing.T) string {
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(wd, "..", "..")
}

func internalPackages(t *testing.T) []string {
	entries, err := os.ReadDir(filepath.Join(root(t), "internal"))
	if err != nil {
		t.Fatal(err)
	}
	var pkgs []string
	for _, e := range entries {
		if e.IsDir() {
			pkgs = append(pkgs, e.Name())
		}
	}
	sort.Strings(pkgs)
	return pkgs
}

// imports returns the non-test imports of every package in dir and below
// (a package's subpackages count as the package).
func imports(t *testing.T, dir string) map[string][]string {
	out := map[string][]string{}
	filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil || !d.IsDir() || d.Name() == "testdata" {
			if d != nil && d.IsDir() && d.Name() == "testdata" {
				return filepath.SkipDir
			}
			return err
		}
		p, err := build.Default.ImportDir(path, 0)
		if err != nil {
			return nil // no Go files here
		}
		for _, f := range p.GoFiles {
			out[filepath.Join(path, f)] = fileImports(t, filepath.Join(path, f))
		}
		return nil
	})
	return out
}

func fileImports(t *testing.T, file string) []string {
	f, err := parser.ParseFile(token.NewFileSet(), file, nil, parser.ImportsOnly)
	if err != nil {
		t.Fatal(err)
	}
	var imps []string
	for _, s := range f.Imports {
		imps = append(imps, strings.Trim(s.Path.Value, `"`))
	}
	return imps
}

func TestCoresAreDeterministic(t *testing.T) {
	for _, core := range cores {
		dir := filepath.Join(root(t), "internal", core)
		if _, err := os.Stat(dir); err != nil {
			continue // the core does not exist yet
		}
		for file, imps := range imports(t, dir) {
			for _, v := range coreViolations(t, file, imps) {
				t.Errorf("%s: %s", file, v)
			}
		}
	}
}

// coreViolations lists what in a core's source file breaks determinism.
func coreViolations(t *testing.T, file string, imps []string) []string {
	var out []string
	for _, imp := range imps {
		if slices.Contains(pureParsers, imp) {
			continue
		}
		for _, bad := range forbidden {
			if imp == bad || strings.HasPrefix(imp, bad+"/") {
				out = append(out, "imports "+imp+": protocol cores get time, randomness, network and disk only through internal/env")
			}
		}
		for _, bad := range coreMayNotImport {
			if imp == module+"internal/"+bad {
				out = append(out, "imports "+imp+": a core must not depend on the runtime or the simulator")
			}
		}
	}
	f, err := parser.ParseFile(token.NewFileSet(), file, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	ast.Inspect(f, func(n ast.Node) bool {
		if _, ok := n.(*ast.GoStmt); ok {
			out = append(out, "starts a goroutine: cores are single-threaded state machines")
		}
		return true
	})
	return out
}

func TestLowerLayersNeverImportHigherOnes(t *testing.T) {
	for _, pkg := range internalPackages(t) {
		h, ok := layer[pkg]
		if !ok {
			t.Errorf("internal/%s has no layer: add it to the table in deptest_test.go", pkg)
			continue
		}
		for file, imps := range imports(t, filepath.Join(root(t), "internal", pkg)) {
			for _, imp := range imps {
				if !strings.HasPrefix(imp, module+"internal/") {
					continue
				}
				dep := strings.SplitN(strings.TrimPrefix(imp, module+"internal/"), "/", 2)[0]
				if dep == pkg {
					continue
				}
				if dh, ok := layer[dep]; !ok || dh >= h {
					t.Errorf("%s (layer %d) imports internal/%s (layer %d): lower layers never import higher ones", file, h, dep, dh)
				}
			}
		}
	}
}

// TestGuardCatchesViolations checks the checker on a throwaway core.
func TestGuardCatchesViolations(t *testing.T) {
	dir := t.TempDir()
	src := "package x\nimport (\n\t\"time\"\n\t\"sync/atomic\"\n\t\"net/http\"\n\t\"net/mail\"\n\t\"" + module + "internal/sim\"\n)\n" +
		"var _ = time.Now\nvar _ atomic.Int64\nvar _ = http.Get\nvar _ = mail.ParseAddress\nvar _ = sim.New\nfunc f() { go f() }\n"
	file := filepath.Join(dir, "x.go")
	if err := os.WriteFile(file, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	got := coreViolations(t, file, imports(t, dir)[file])
	// net/mail is an allowed pure parser; net/http, like the rest of net, is not.
	if len(got) != 5 {
		t.Fatalf("want 5 violations (time, sync/atomic, net/http, sim, go statement), got %q", got)
	}
	for _, v := range got {
		if strings.Contains(v, "net/mail") {
			t.Fatalf("net/mail is a pure parser and allowed, got %q", v)
		}
	}
}
