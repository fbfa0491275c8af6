// Command modcheck fails when a package of the workspace crosses a boundary
// the project keeps (see rules): most code shares one module, so these
// boundaries are rules on package paths, not on go.mod files. It reads the
// import graph with `go list` from the workspace root (go.work), tests included.
//
//	go run ./tools/modcheck -root .
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// prefix is the import path shared by every module of ours.
const prefix = "github.com/optout-sync/optout-sync/"

func main() {
	root := flag.String("root", ".", "the workspace root (holds go.work)")
	flag.Parse()
	pkgs, err := load(*root)
	if err != nil {
		fmt.Fprintln(os.Stderr, "modcheck:", err)
		os.Exit(2)
	}
	if vs := Check(pkgs); len(vs) > 0 {
		for _, v := range vs {
			fmt.Fprintln(os.Stderr, "modcheck:", v)
		}
		os.Exit(1)
	}
	fmt.Printf("modcheck: %d packages keep the package boundaries\n", len(pkgs))
}

// Package is one package of ours and its direct imports.
type Package struct {
	ImportPath  string
	Imports     []string
	TestImports []string // of its _test.go files, both packages
}

// load lists every package of the workspace modules under root.
func load(root string) ([]Package, error) {
	mods, err := goCmd(root, "list", "-m", "-f", "{{.Path}}")
	if err != nil {
		return nil, err
	}
	args := []string{"list", "-e", "-json=ImportPath,Imports,TestImports,XTestImports,Error"}
	for _, m := range strings.Fields(string(mods)) {
		args = append(args, m+"/...")
	}
	out, err := goCmd(root, args...)
	if err != nil {
		return nil, err
	}
	var pkgs []Package
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p struct {
			ImportPath                         string
			Imports, TestImports, XTestImports []string
			Error                              *struct{ Err string }
		}
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return nil, fmt.Errorf("decode go list: %w", err)
		}
		if p.Error != nil {
			return nil, fmt.Errorf("go list %s: %s", p.ImportPath, p.Error.Err)
		}
		pkgs = append(pkgs, Package{ImportPath: p.ImportPath, Imports: p.Imports, TestImports: append(p.TestImports, p.XTestImports...)})
	}
	if len(pkgs) == 0 {
		return nil, fmt.Errorf("no packages under %s", root)
	}
	return pkgs, nil
}

func goCmd(dir string, args ...string) ([]byte, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("root %s: %w", dir, err)
	}
	cmd := exec.Command("go", args...)
	cmd.Dir = abs
	// The workspace's go.work, whatever GOWORK this command runs with.
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "GOWORK=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, "GOWORK="+filepath.Join(abs, "go.work"))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("go %s: %w: %s", strings.Join(args[:2], " "), err, stderr.String())
	}
	return out, nil
}
