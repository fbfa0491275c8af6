package deploytest

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"
)

// scratchDir holds the replayed build contexts; TestMain removes it.
var scratchDir string

func TestMain(m *testing.M) {
	var err error
	scratchDir, err = os.MkdirTemp("", "deploytest-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(scratchDir)
	os.Exit(code)
}

// builtImage is the outcome of replaying a Dockerfile's build stage.
type builtImage struct {
	binary  string // path of the built binary
	version string // the VERSION build argument used
	log     string
	err     error
}

var (
	buildOnce sync.Map // service -> *sync.Once
	builds    sync.Map // service -> *builtImage
)

// replayBuild replays the first stage of svc's Dockerfile (DockerfileOf)
// without Docker: a fresh directory gets exactly what its COPY instructions
// take from the build context (after .dockerignore), then its `go build` RUN
// runs there with the stage's ENV and ARGs and the local Go toolchain
// (GOTOOLCHAIN=local, the same Go as the pinned builder image); the
// module download RUN runs too (through the local module cache and the Go
// module proxy). The binary is built once per test binary run.
func replayBuild(t testing.TB, svc string) *builtImage {
	t.Helper()
	once, _ := buildOnce.LoadOrStore(svc, &sync.Once{})
	once.(*sync.Once).Do(func() {
		b := &builtImage{version: "deploytest-" + svc + "-1.2.3"}
		b.binary, b.log, b.err = doReplay(t, svc, b.version)
		builds.Store(svc, b)
	})
	v, _ := builds.Load(svc)
	return v.(*builtImage)
}

func doReplay(t testing.TB, svc, version string) (binary, log string, err error) {
	root := repoRoot(t)
	df := parseDockerfile(t, root, svc)
	ctxFiles := contextFiles(t, root)
	dir := filepath.Join(scratchDir, svc)
	fsRoot := filepath.Join(dir, "fs") // the build stage's filesystem
	var logb strings.Builder
	env := withoutEnv(os.Environ(), "GOWORK", "GOFLAGS", "CGO_ENABLED", "GOTOOLCHAIN", "GOOS", "GOARCH")
	workdir := "/"
	built := false
	for _, c := range df.Stages[0].Commands {
		switch c := c.(type) {
		case *instructions.WorkdirCommand:
			workdir = path.Join(workdir, c.Path)
			if err := os.MkdirAll(filepath.Join(fsRoot, workdir), 0o755); err != nil {
				return "", "", err
			}
		case *instructions.EnvCommand:
			for _, kv := range c.Env {
				env = append(env, kv.Key+"="+kv.Value)
			}
		case *instructions.ArgCommand:
			for _, a := range c.Args {
				if a.Key == "VERSION" {
					env = append(env, "VERSION="+version)
				}
			}
		case *instructions.CopyCommand:
			if c.From != "" {
				continue
			}
			dest := c.DestPath
			if !path.IsAbs(dest) {
				dest = path.Join(workdir, dest) + map[bool]string{true: "/"}[strings.HasSuffix(c.DestPath, "/")]
			}
			for _, src := range c.SourcePaths {
				if err := copyFromContext(root, ctxFiles, path.Clean(src), fsRoot, dest, len(c.SourcePaths) > 1); err != nil {
					return "", "", fmt.Errorf("COPY %s %s: %w", src, c.DestPath, err)
				}
			}
		case *instructions.RunCommand:
			cmdline := strings.Join(c.CmdLine, " ")
			if !regexp.MustCompile(`^(CGO_ENABLED=0 )?go (mod download|build) `).MatchString(cmdline + " ") {
				return "", logb.String(), fmt.Errorf("RUN %q: the replay only knows go mod download and go build", cmdline)
			}
			// Absolute paths of the stage live under fsRoot.
			cmdline = regexp.MustCompile(`(-o\s+)/`).ReplaceAllString(cmdline, "${1}"+fsRoot+"/")
			cmd := exec.Command("sh", "-c", cmdline)
			cmd.Dir = filepath.Join(fsRoot, workdir)
			cmd.Env = env
			out, err := cmd.CombinedOutput()
			fmt.Fprintf(&logb, "RUN %s\n%s", cmdline, out)
			if err != nil {
				return "", logb.String(), fmt.Errorf("go build: %w\n%s", err, out)
			}
			if !strings.Contains(cmdline, "go build") {
				continue
			}
			built = true
			binary = filepath.Join(fsRoot, regexp.MustCompile(`-o\s+(\S+)`).FindStringSubmatch(strings.Join(c.CmdLine, " "))[1])
		}
	}
	if !built {
		return "", logb.String(), fmt.Errorf("no go build ran")
	}
	return binary, logb.String(), nil
}

// copyFromContext applies COPY semantics for one source: a file goes to
// dest (into it when dest ends with / or several sources are copied), a
// directory's content goes into dest.
func copyFromContext(root string, ctxFiles map[string]bool, src, fsRoot, dest string, many bool) error {
	write := func(rel, to string) error {
		b, err := os.ReadFile(filepath.Join(root, rel))
		if err != nil {
			return err
		}
		to = filepath.Join(fsRoot, to)
		if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
			return err
		}
		return os.WriteFile(to, b, 0o644)
	}
	if ctxFiles[src] {
		to := dest
		if strings.HasSuffix(dest, "/") || many {
			to = path.Join(dest, path.Base(src))
		}
		return write(src, to)
	}
	n := 0
	for f := range ctxFiles {
		if rest, ok := strings.CutPrefix(f, src+"/"); ok || src == "." {
			if src == "." {
				rest = f
			}
			if err := write(f, path.Join(dest, rest)); err != nil {
				return err
			}
			n++
		}
	}
	if n == 0 {
		return fmt.Errorf("%s is not in the build context", src)
	}
	return nil
}

// TestDockerfileBuildReplay builds every service from exactly what its
// Dockerfile copies, and checks the binary: static (CGO off), -trimpath,
// and stamped with the VERSION build argument.
func TestDockerfileBuildReplay(t *testing.T) {
	for _, svc := range Services {
		t.Run(svc, func(t *testing.T) {
			t.Parallel()
			b := replayBuild(t, svc)
			if b.err != nil {
				t.Fatalf("%v\n%s", b.err, b.log)
			}
			out, err := exec.Command("go", "version", "-m", b.binary).Output()
			if err != nil {
				t.Fatal(err)
			}
			// The first line names the binary itself; the rest is its build
			// info (with -trimpath, Go leaves -ldflags out of it).
			_, info, _ := strings.Cut(string(out), "\n")
			for _, want := range []string{"build\t-trimpath=true", "build\tCGO_ENABLED=0", "path\tgithub.com/optout-sync/optout-sync/services/" + svc} {
				if !strings.Contains(info, want) {
					t.Errorf("binary build info lacks %q:\n%s", want, info)
				}
			}
			if strings.Contains(info, repoRoot(t)) || strings.Contains(info, scratchDir) {
				t.Errorf("build info holds local paths (-trimpath not applied):\n%s", info)
			}
			// The stamp only lands where the main package declares it.
			if declaresVersion(t, filepath.Join(repoRoot(t), "services", svc)) {
				bin, err := os.ReadFile(b.binary)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Contains(bin, []byte(b.version)) {
					t.Errorf("main.version is declared but %q is not in the binary: -X did not apply", b.version)
				}
			} else {
				t.Logf("services/%s declares no main.version; the -X flag is a no-op there", svc)
			}
		})
	}
}

func declaresVersion(t testing.TB, dir string) bool {
	files, _ := filepath.Glob(filepath.Join(dir, "*.go"))
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if regexp.MustCompile(`(?m)^\s*(var\s+)?version\s+(string\s*)?=`).Match(b) {
			return true
		}
	}
	return false
}
