package deploytest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/moby/buildkit/client/llb"
	"github.com/moby/buildkit/client/llb/sourceresolver"
	"github.com/moby/buildkit/frontend/dockerfile/dockerfile2llb"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/moby/buildkit/frontend/dockerui"
	"github.com/moby/patternmatcher"
	"github.com/moby/patternmatcher/ignorefile"
	digest "github.com/opencontainers/go-digest"
	ocispecs "github.com/opencontainers/image-spec/specs-go/v1"
	"helm.sh/helm/v3/pkg/chartutil"
)

// Images the Dockerfiles may start from. The builder tag must carry the Go
// version of go.work (checked below); its digest is not pinned because no
// registry is reachable here to read it.
const (
	builderImage = "golang:1.26.8-bookworm"
	runtimeImage = "gcr.io/distroless/static-debian12:nonroot"
)

// Dockerfile is one parsed production Dockerfile.
type Dockerfile struct {
	Service string
	Path    string
	Data    []byte
	Stages  []instructions.Stage
}

func parseDockerfile(t testing.TB, root, svc string) *Dockerfile {
	t.Helper()
	p, data := dockerfileFor(t, root, svc)
	return parseDockerfileData(t, svc, p, data)
}

// dockerfileFor reads svc's Dockerfile as `docker build --build-arg
// SERVICE=svc` sees it: ${SERVICE} replaced where Docker expands it (exec-form
// ENTRYPOINT and CMD are not expanded; checkDockerfile rejects a variable there).
func dockerfileFor(t testing.TB, root, svc string) (string, []byte) {
	t.Helper()
	p := filepath.Join(root, DockerfileOf(svc))
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, l := range strings.SplitAfter(string(data), "\n") {
		if !regexp.MustCompile(`^\s*(ENTRYPOINT|CMD)\s+\[`).MatchString(l) {
			l = strings.ReplaceAll(l, "${SERVICE}", svc)
		}
		lines = append(lines, l)
	}
	return p, []byte(strings.Join(lines, ""))
}

func parseDockerfileData(t testing.TB, svc, p string, data []byte) *Dockerfile {
	t.Helper()
	res, err := parser.Parse(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("%s: %v", p, err)
	}
	for _, w := range res.Warnings {
		t.Errorf("%s: parser warning: %s", p, w.Short)
	}
	stages, _, err := instructions.Parse(res.AST, nil)
	if err != nil {
		t.Fatalf("%s: %v", p, err)
	}
	return &Dockerfile{Service: svc, Path: p, Data: data, Stages: stages}
}

// TestDockerfiles checks each service's Dockerfile: multi-stage, a pinned Go
// builder matching go.work, an existing main package built with
// CGO_ENABLED=0, -trimpath and version stamping, a distroless nonroot final
// stage without a shell, and every COPY source present in the build context.
func TestDockerfiles(t *testing.T) {
	root := repoRoot(t)
	goVersion := goWorkVersion(t, root)
	ctxFiles := contextFiles(t, root)
	for _, svc := range Services {
		t.Run(svc, func(t *testing.T) {
			t.Parallel()
			df := parseDockerfile(t, root, svc)
			for _, p := range checkDockerfile(df, root, goVersion, ctxFiles) {
				t.Error(p)
			}
			// The ports the image documents are the chart's (the shared
			// Dockerfile documents none: optoutctl listens on none, and the
			// chart declares the admin port).
			var exposed []string
			for _, c := range df.Stages[len(df.Stages)-1].Commands {
				if e, ok := c.(*instructions.ExposeCommand); ok {
					exposed = append(exposed, e.Ports...)
				}
			}
			vals, err := chartutil.ReadValuesFile(filepath.Join(root, ChartDir, "values.yaml"))
			if err != nil {
				t.Fatal(err)
			}
			sandbox, _ := vals.PathValue("sfsandbox.port")
			pubsub, _ := vals.PathValue("sfsandbox.pubsubPort")
			sandboxPorts := []string{fmt.Sprint(sandbox), fmt.Sprint(pubsub)}
			if orgs, err := vals.PathValue("sfsandbox.orgs"); err == nil {
				for _, org := range orgs.([]any) { // each org's own origin
					sandboxPorts = append(sandboxPorts, fmt.Sprint(org.(map[string]any)["port"]))
				}
			}
			want := map[string][]string{"sfsandbox": sandboxPorts}[svc]
			slices.Sort(exposed) // the parser sorts EXPOSE's ports
			slices.Sort(want)
			if !slices.Equal(exposed, want) {
				t.Errorf("EXPOSE %v, want %v (the chart's sfsandbox.port, pubsubPort and org ports)", exposed, want)
			}
		})
	}
}

func checkDockerfile(df *Dockerfile, root, goVersion string, ctxFiles map[string]bool) []string {
	var p []string
	add := func(format string, args ...any) { p = append(p, fmt.Sprintf(format, args...)) }
	if len(df.Stages) < 2 {
		add("%s: %d stage(s), want a multi-stage build", df.Path, len(df.Stages))
		return p
	}
	build, final := df.Stages[0], df.Stages[len(df.Stages)-1]
	if build.BaseName != builderImage {
		add("%s: builder %q, want %q", df.Path, build.BaseName, builderImage)
	}
	if !strings.HasPrefix(build.BaseName, "golang:"+goVersion+"-") {
		add("%s: builder %q does not carry go.work's Go %s", df.Path, build.BaseName, goVersion)
	}
	if final.BaseName != runtimeImage && final.BaseName != "scratch" && !regexp.MustCompile(`^gcr\.io/distroless/static(-debian\d+)?:nonroot(@sha256:[0-9a-f]{64})?$`).MatchString(final.BaseName) {
		add("%s: final stage %q is not distroless static nonroot or scratch", df.Path, final.BaseName)
	}

	// Build stage: environment, ARGs and the go build command.
	env := map[string]string{}
	args := map[string]bool{}
	var buildCmd string
	workdir := "/"
	for _, c := range build.Commands {
		switch c := c.(type) {
		case *instructions.EnvCommand:
			for _, kv := range c.Env {
				env[kv.Key] = kv.Value
			}
		case *instructions.ArgCommand:
			for _, a := range c.Args {
				args[a.Key] = true
			}
		case *instructions.WorkdirCommand:
			workdir = path.Join(workdir, c.Path)
		case *instructions.RunCommand:
			cmd := strings.Join(c.CmdLine, " ")
			if strings.Contains(cmd, "go build") {
				if buildCmd != "" {
					add("%s: two go build commands", df.Path)
				}
				buildCmd = cmd
				if !args["VERSION"] {
					add("%s: go build runs before ARG VERSION is declared", df.Path)
				}
			}
		}
	}
	if buildCmd == "" {
		add("%s: no go build in the first stage", df.Path)
		return p
	}
	if env["CGO_ENABLED"] != "0" && !strings.Contains(buildCmd, "CGO_ENABLED=0") {
		add("%s: go build without CGO_ENABLED=0 (the binary would not be static)", df.Path)
	}
	for _, want := range []string{"-trimpath", "-X main.version=${VERSION}", "-s -w"} {
		if !strings.Contains(buildCmd, want) {
			add("%s: go build lacks %s: %s", df.Path, want, buildCmd)
		}
	}
	pkg := regexp.MustCompile(`\s(\./services/[a-z0-9]+)\s*$`).FindStringSubmatch(buildCmd)
	if pkg == nil || pkg[1] != "./services/"+df.Service {
		add("%s: go build does not build ./services/%s: %s", df.Path, df.Service, buildCmd)
	} else if err := isMainPackage(filepath.Join(root, pkg[1])); err != nil {
		add("%s: %v", df.Path, err)
	}
	out := regexp.MustCompile(`-o\s+(\S+)`).FindStringSubmatch(buildCmd)
	if out == nil {
		add("%s: go build has no -o", df.Path)
		return p
	}

	// COPY sources exist in the context (after .dockerignore).
	copied := map[string]bool{} // context paths copied into the build stage
	for _, st := range df.Stages {
		for _, c := range st.Commands {
			cp, ok := c.(*instructions.CopyCommand)
			if !ok || cp.From != "" {
				continue
			}
			for _, src := range cp.SourcePaths {
				src = path.Clean(src)
				if !ctxFiles[src] && !hasPrefixDir(ctxFiles, src) {
					add("%s: COPY %s: not in the build context (missing, or excluded by .dockerignore)", df.Path, src)
				}
				copied[src] = true
			}
		}
	}
	// Workspace mode needs every go.work module's go.mod; the binary needs
	// the sources of every package of ours it imports.
	for _, m := range goWorkUses(root) {
		if !copied[path.Join(m, "go.mod")] {
			add("%s: go.work uses %s but its go.mod is not copied (the build would fail in workspace mode)", df.Path, m)
		}
	}
	for _, d := range workspaceDeps(root, "./services/"+df.Service) {
		if !underAnyDir(d, slices.Collect(maps.Keys(copied))) {
			add("%s: ./services/%s imports %s whose sources are not copied", df.Path, df.Service, d)
		}
	}

	// Final stage: no shell commands, the binary from the build stage, a
	// nonroot user, an exec-form entrypoint.
	var user, entry string
	var binary string
	for _, c := range final.Commands {
		switch c := c.(type) {
		case *instructions.RunCommand:
			add("%s: RUN in the final stage (distroless has no shell): %v", df.Path, c.CmdLine)
		case *instructions.UserCommand:
			user = c.User
		case *instructions.CopyCommand:
			if c.From == build.Name && slices.Contains(c.SourcePaths, out[1]) {
				binary = c.DestPath
			}
		case *instructions.EntrypointCommand:
			if c.PrependShell {
				add("%s: ENTRYPOINT in shell form needs a shell", df.Path)
			}
			if len(c.CmdLine) > 0 {
				entry = c.CmdLine[0]
			}
			if strings.Contains(strings.Join(c.CmdLine, " "), "$") {
				add("%s: exec-form ENTRYPOINT %v names a variable Docker does not expand", df.Path, c.CmdLine)
			}
		case *instructions.CmdCommand:
			if c.PrependShell {
				add("%s: CMD in shell form needs a shell", df.Path)
			}
		}
	}
	if !regexp.MustCompile(`^(65532|nonroot)(:(65532|nonroot))?$`).MatchString(user) {
		add("%s: final USER %q, want nonroot (65532)", df.Path, user)
	}
	if binary == "" {
		add("%s: the final stage does not copy %s from stage %q", df.Path, out[1], build.Name)
	} else if entry != binary {
		add("%s: ENTRYPOINT %q is not the copied binary %q", df.Path, entry, binary)
	}
	return p
}

func hasPrefixDir(files map[string]bool, dir string) bool {
	for f := range files {
		if strings.HasPrefix(f, dir+"/") {
			return true
		}
	}
	return false
}

func isMainPackage(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("main package %s: %w", dir, err)
	}
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".go") && !strings.HasSuffix(e.Name(), "_test.go") {
			b, err := os.ReadFile(filepath.Join(dir, e.Name()))
			if err != nil {
				return err
			}
			if regexp.MustCompile(`(?m)^package main\s*$`).Match(b) {
				return nil
			}
		}
	}
	return fmt.Errorf("%s has no file in package main", dir)
}

var goWorkUseRe = regexp.MustCompile(`(?m)^\s*(?:use\s+)?(\.(?:/[^\s)]+)?)\s*$`)

// underAnyDir reports whether the relative directory d is one of dirs or
// below one ("." covers everything).
func underAnyDir(d string, dirs []string) bool {
	for _, r := range dirs {
		r = path.Clean(r)
		if r == "." || d == r || strings.HasPrefix(d, r+"/") {
			return true
		}
	}
	return false
}

// goWorkUses lists go.work's use directories, relative and cleaned.
func goWorkUses(root string) []string {
	b, _ := os.ReadFile(filepath.Join(root, "go.work"))
	var out []string
	for _, m := range goWorkUseRe.FindAllStringSubmatch(string(b), -1) {
		out = append(out, path.Clean(m[1]))
	}
	return out
}

func goWorkVersion(t testing.TB, root string) string {
	b, err := os.ReadFile(filepath.Join(root, "go.work"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^go\s+(\S+)`).FindSubmatch(b)
	if m == nil {
		t.Fatal("go.work has no go line")
	}
	return string(m[1])
}

var (
	depsMu    sync.Mutex
	depsCache = map[string][]string{}
)

// workspaceDeps lists the directories of the packages of the workspace
// modules that pkg's build reads (go list -deps in workspace mode), relative
// to root.
func workspaceDeps(root, pkg string) []string {
	depsMu.Lock()
	defer depsMu.Unlock()
	if d, ok := depsCache[pkg]; ok {
		return d
	}
	cmd := exec.Command("go", "list", "-deps", "-f", "{{with .Module}}{{if .Main}}{{$.Dir}}{{end}}{{end}}", pkg)
	cmd.Dir = root
	cmd.Env = append(withoutEnv(os.Environ(), "GOWORK", "GOFLAGS"), "GOWORK="+filepath.Join(root, "go.work"), "GOFLAGS=-mod=readonly")
	out, err := cmd.Output()
	if err != nil {
		return []string{"(go list failed: " + err.Error() + ")"}
	}
	seen := map[string]bool{}
	var dirs []string
	for _, l := range strings.Fields(string(out)) {
		rel, err := filepath.Rel(root, l)
		if err == nil && !seen[rel] {
			seen[rel] = true
			dirs = append(dirs, filepath.ToSlash(rel))
		}
	}
	slices.Sort(dirs)
	depsCache[pkg] = dirs
	return dirs
}

func withoutEnv(env []string, names ...string) []string {
	var out []string
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		if !slices.Contains(names, k) {
			out = append(out, kv)
		}
	}
	return out
}

// contextFiles is the build context the daemon would receive: every file
// under the repository root that .dockerignore does not exclude (paths
// relative, with slashes). BuildKit uses the same pattern matcher.
func contextFiles(t testing.TB, root string) map[string]bool {
	t.Helper()
	f, err := os.Open(filepath.Join(root, ".dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	patterns, err := ignorefile.ReadAll(f)
	if err != nil {
		t.Fatal(err)
	}
	pm, err := patternmatcher.New(patterns)
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]bool{}
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		rel = filepath.ToSlash(rel)
		if d.IsDir() {
			if rel == ".git" || rel == "bin" {
				return filepath.SkipDir
			}
			return nil
		}
		excluded, err := pm.MatchesOrParentMatches(rel)
		if err != nil {
			return err
		}
		if !excluded {
			files[rel] = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// TestDockerignore: the context holds what the builds need and nothing
// that must not reach a daemon.
func TestDockerignore(t *testing.T) {
	root := repoRoot(t)
	files := contextFiles(t, root)
	for _, want := range []string{"go.work", "go.work.sum", "go.mod", "go.sum", "proto/go.mod", "services/sfsandbox/go.mod", "services/pusher/main.go"} {
		if !files[want] {
			t.Errorf("%s is not in the build context", want)
		}
	}
	for f := range files {
		if strings.HasPrefix(f, ".git/") || strings.HasSuffix(f, "_test.go") || strings.HasSuffix(f, ".test") ||
			strings.Contains(f, "/testdata/") || strings.HasPrefix(f, "deploy/helm/") ||
			// bench/ is a workspace module: its go.mod and go.sum only, never its sources or reports.
			(strings.HasPrefix(f, "bench/") && f != "bench/go.mod" && f != "bench/go.sum") {
			t.Errorf("%s reaches the build context", f)
		}
	}
}

// fakeResolver answers BuildKit's base-image lookups without a registry:
// an image config with the user distroless sets.
type fakeResolver struct{}

func (fakeResolver) ResolveImageConfig(_ context.Context, ref string, _ sourceresolver.Opt) (string, digest.Digest, []byte, error) {
	img := ocispecs.Image{Platform: ocispecs.Platform{OS: "linux", Architecture: "amd64"}}
	img.Config.Env = []string{"PATH=/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	if strings.Contains(ref, "distroless") {
		img.Config.User = "65532"
	}
	b, err := json.Marshal(img)
	return ref, digest.FromBytes(b), b, err
}

// TestDockerfileBuildChecks runs BuildKit's own build checks (what
// `docker build --check` reports) on every Dockerfile.
func TestDockerfileBuildChecks(t *testing.T) {
	root := repoRoot(t)
	paths := []string{filepath.Join(TiltDir, "Dockerfile.dev")}
	for _, svc := range Services {
		if p := DockerfileOf(svc); !slices.Contains(paths, p) {
			paths = append(paths, p)
		}
	}
	for _, p := range paths {
		t.Run(p, func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join(root, p))
			if err != nil {
				t.Fatal(err)
			}
			for _, w := range buildChecks(t, p, data) {
				t.Error(w)
			}
		})
	}
}

// buildChecks is `docker build --check`: BuildKit's lint rules, with base
// images resolved by fakeResolver.
func buildChecks(t testing.TB, p string, data []byte) []string {
	t.Helper()
	smap := llb.NewSourceMap(nil, p, "Dockerfile", data)
	smap.Definition = &llb.Definition{}
	opt := dockerfile2llb.ConvertOpt{MetaResolver: fakeResolver{}, SourceMap: smap}
	opt.Config = dockerui.Config{BuildArgs: map[string]string{"SERVICE": "pusher"}}
	res, err := dockerfile2llb.DockerfileLint(context.Background(), data, opt)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, w := range res.Warnings {
		out = append(out, fmt.Sprintf("%s: %s: %s (%s)", p, w.RuleName, w.Detail, w.URL))
	}
	if res.Error != nil {
		out = append(out, fmt.Sprintf("%s: %s", p, res.Error.Message))
	}
	return out
}

// TestDockerfileChecksCatchMistakes breaks the pusher's Dockerfile in
// memory and expects the checks to notice.
func TestDockerfileChecksCatchMistakes(t *testing.T) {
	root := repoRoot(t)
	goVersion := goWorkVersion(t, root)
	ctxFiles := contextFiles(t, root)
	_, orig := dockerfileFor(t, root, "pusher")
	cases := []struct{ name, old, new, want string }{
		{"root user", "USER 65532:65532", "USER root", "final USER"},
		{"no user", "USER 65532:65532", "", "final USER"},
		{"alpine runtime", "FROM gcr.io/distroless/static-debian12:nonroot", "FROM alpine:3.22", "not distroless"},
		{"a shell step in the final stage", "USER 65532:65532", "RUN chmod 0755 /usr/local/bin/pusher\nUSER 65532:65532", "RUN in the final stage"},
		{"no -trimpath", "go build -trimpath ", "go build ", "lacks -trimpath"},
		{"cgo left on", "CGO_ENABLED=0 go build", "go build", ""},
		{"wrong package", "-o /out/service ./services/pusher", "-o /out/service ./services/pushr", "does not build ./services/pusher"},
		{"missing source", "COPY shared/ shared/", "COPY shared/ shared/\nCOPY config.yaml ./", "config.yaml: not in the build context"},
		{"a workspace go.mod left out", "COPY proto/go.mod proto/go.sum proto/\n", "", "go.work uses proto"},
		{"an imported package left out", "COPY proto/ proto/\n", "", "proto/optout/v1 whose sources are not copied"},
		{"builder off go.work's Go", "FROM golang:1.26.8-bookworm AS build", "FROM golang:1.25-bookworm AS build", "does not carry go.work's Go"},
		{"shell-form entrypoint", `ENTRYPOINT ["/usr/local/bin/service"]`, "ENTRYPOINT /usr/local/bin/service", "shell form"},
		{"entrypoint naming the service argument", `ENTRYPOINT ["/usr/local/bin/service"]`, `ENTRYPOINT ["/usr/local/bin/${SERVICE}"]`, "names a variable"},
		{"single stage", "FROM gcr.io/distroless/static-debian12:nonroot\n", "", "want a multi-stage build"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if !bytes.Contains(orig, []byte(c.old)) {
				t.Fatalf("the Dockerfile no longer contains %q: update this case", c.old)
			}
			data := bytes.Replace(orig, []byte(c.old), []byte(c.new), 1)
			want := c.want
			if c.name == "cgo left on" {
				// ENV CGO_ENABLED=0 still covers it; dropping both must fail.
				data = bytes.Replace(data, []byte("ENV CGO_ENABLED=0 "), []byte("ENV "), 1)
				want = "without CGO_ENABLED=0"
			}
			df := parseDockerfileData(t, "pusher", "pusher/Dockerfile", data)
			problems := checkDockerfile(df, root, goVersion, ctxFiles)
			for _, p := range problems {
				if strings.Contains(p, want) {
					return
				}
			}
			t.Fatalf("missed (want %q): %q", want, problems)
		})
	}
	t.Run("BuildKit lint", func(t *testing.T) {
		data := bytes.Replace(orig, []byte("AS build"), []byte("as build"), 1)
		if w := buildChecks(t, "pusher/Dockerfile", data); len(w) == 0 || !strings.Contains(strings.Join(w, " "), "FromAsCasing") {
			t.Fatalf("BuildKit's checks missed a FromAsCasing mistake: %q", w)
		}
	})
}
