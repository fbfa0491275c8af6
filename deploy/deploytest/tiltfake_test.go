package deploytest

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"go.starlark.net/starlark"
	"go.starlark.net/starlarkstruct"
	"go.starlark.net/syntax"
)

// A recording of Tilt's Tiltfile builtins, for running tilt/Tiltfile under
// go.starlark.net without Tilt, Docker or a cluster. Each builtin takes the
// parameters Tilt's API documents (internal/tiltfile/api/__init__.py in
// tilt-dev/tilt), so a misspelt keyword fails here as it would in Tilt;
// relative paths resolve against the directory of the file being executed,
// as Tilt's starkit.AbsPath does. helm() really renders the chart (Helm's Go
// packages), so the recorded objects are what Tilt would deploy.

// tiltFileOptions are the Starlark dialect options Tilt enables
// (starkit/environment.go).
var tiltFileOptions = &syntax.FileOptions{Set: true, GlobalReassign: true, Recursion: true, TopLevelControl: true, While: true}

type tiltBuild struct {
	Ref, Context, Dockerfile, DockerfileContents, Target string
	BuildArgs                                            map[string]string
	Only, Entrypoint                                     []string
	LiveUpdate                                           []liveStep
}

type liveStep struct {
	Kind          string // sync or run
	Local, Remote string
	Cmd           string
}

type tiltDoc struct {
	Source string // file path, or "helm:<chart>"
	YAML   string
}

type tiltHelm struct {
	Chart, Name, Namespace string
	Values, Set            []string
	Rendered               *Rendered
}

type portForward struct {
	Local, Container int
	Name, LinkPath   string
}

type tiltResource struct {
	Workload, NewName string
	PortForwards      []portForward
	ResourceDeps      []string
	Labels, Links     []string
	AutoInit          bool
	Trigger           string
	Objects           []string
	ExtraPodSelectors bool
	DiscoveryStrategy string
	PodReadiness      string
}

type tiltLocal struct {
	Name, Cmd, Dir                     string
	Deps, Ignore, ResourceDeps, Labels []string
	Links                              []string
	Env                                map[string]string
	Trigger                            string
	AutoInit                           bool
}

// tiltRun is one execution of a Tiltfile and everything it declared.
type tiltRun struct {
	Root     string
	Env      map[string]string         // what os.getenv sees
	Args     map[string]starlark.Value // `tilt up -- --flag` values for config.parse
	Overlay  map[string]string         // file contents replacing those on disk (mutation tests)
	Main     string
	Files    []string // Tiltfiles executed, in order
	Builds   []*tiltBuild
	Docs     []tiltDoc
	Helms    []*tiltHelm
	Res      []*tiltResource
	Locals   []*tiltLocal
	Watched  []string
	Defined  map[string]string // config.define_* name -> type
	Printed  []string
	extCache map[string]starlark.StringDict
}

// restartProcessExt stands in for ext://restart_process
// (tilt-dev/tilt-extensions): written from its README and API, it declares
// the same two builds: <ref>-base from the user's arguments, and <ref> on
// top of it with the restart wrapper as entrypoint and a final run step.
const restartProcessExt = `
def docker_build_with_restart(ref, context, entrypoint, live_update, base_suffix='-base', restart_file='/.restart-proc', **kwargs):
    if len(live_update) == 0:
        fail('docker_build_with_restart requires at least one live_update step')
    base_ref = ref + base_suffix
    docker_build(base_ref, context, **kwargs)
    child = {k: v for k, v in kwargs.items() if k not in ['dockerfile', 'dockerfile_contents', 'target']}
    if type(entrypoint) == 'string':
        wrapped = ['/tilt-restart-wrapper', '--watch_file=' + restart_file, 'sh', '-c', entrypoint]
    else:
        wrapped = ['/tilt-restart-wrapper', '--watch_file=' + restart_file] + entrypoint
    df = 'FROM tiltdev/restart-helper:2020-04-27 as restart-helper\nFROM %s\nRUN ["touch", "%s"]\nCOPY --from=restart-helper /tilt-restart-wrapper /\nCOPY --from=restart-helper /entr /\n' % (base_ref, restart_file)
    docker_build(ref, context, entrypoint=wrapped, dockerfile_contents=df, live_update=live_update + [run('date > ' + restart_file)], **child)
`

// Custom Starlark values, as Tilt has them.
type blobValue struct{ text string }

func (b blobValue) String() string        { return b.text }
func (b blobValue) Type() string          { return "blob" }
func (b blobValue) Freeze()               {}
func (b blobValue) Truth() starlark.Bool  { return b.text != "" }
func (b blobValue) Hash() (uint32, error) { return starlark.String(b.text).Hash() }

type stepValue struct{ liveStep }

func (s stepValue) String() string        { return "live_update_" + s.Kind + "_step" }
func (s stepValue) Type() string          { return "live_update_" + s.Kind + "_step" }
func (s stepValue) Freeze()               {}
func (s stepValue) Truth() starlark.Bool  { return true }
func (s stepValue) Hash() (uint32, error) { return 0, fmt.Errorf("unhashable") }

type pfValue struct{ portForward }

func (p pfValue) String() string        { return fmt.Sprintf("port_forward(%d, %d)", p.Local, p.Container) }
func (p pfValue) Type() string          { return "PortForward" }
func (p pfValue) Freeze()               {}
func (p pfValue) Truth() starlark.Bool  { return true }
func (p pfValue) Hash() (uint32, error) { return 0, fmt.Errorf("unhashable") }

type linkValue struct{ url, name string }

func (l linkValue) String() string        { return l.url }
func (l linkValue) Type() string          { return "Link" }
func (l linkValue) Freeze()               {}
func (l linkValue) Truth() starlark.Bool  { return true }
func (l linkValue) Hash() (uint32, error) { return 0, fmt.Errorf("unhashable") }

type triggerMode string

func (m triggerMode) String() string        { return string(m) }
func (m triggerMode) Type() string          { return "TriggerMode" }
func (m triggerMode) Freeze()               {}
func (m triggerMode) Truth() starlark.Bool  { return true }
func (m triggerMode) Hash() (uint32, error) { return starlark.String(m).Hash() }

const fileKey = "tiltfake.file"

func currentFile(thread *starlark.Thread) string {
	f, _ := thread.Local(fileKey).(string)
	return f
}

func absPath(thread *starlark.Thread, p string) string {
	if filepath.IsAbs(p) {
		return filepath.Clean(p)
	}
	return filepath.Join(filepath.Dir(currentFile(thread)), p)
}

func toStrings(v starlark.Value, what string) ([]string, error) {
	switch x := v.(type) {
	case nil, starlark.NoneType:
		return nil, nil
	case starlark.String:
		return []string{string(x)}, nil
	case blobValue:
		return []string{x.text}, nil
	case starlark.Indexable:
		var out []string
		for i := 0; i < x.Len(); i++ {
			s, ok := starlark.AsString(x.Index(i))
			if !ok {
				return nil, fmt.Errorf("%s: want strings, got %s", what, x.Index(i).Type())
			}
			out = append(out, s)
		}
		return out, nil
	}
	return nil, fmt.Errorf("%s: want a string or a list of strings, got %s", what, v.Type())
}

func toStringMap(v starlark.Value, what string) (map[string]string, error) {
	out := map[string]string{}
	if v == nil || v == starlark.None {
		return out, nil
	}
	d, ok := v.(*starlark.Dict)
	if !ok {
		return nil, fmt.Errorf("%s: want a dict, got %s", what, v.Type())
	}
	for _, it := range d.Items() {
		k, ok1 := starlark.AsString(it[0])
		val, ok2 := starlark.AsString(it[1])
		if !ok1 || !ok2 {
			return nil, fmt.Errorf("%s: want a dict of strings", what)
		}
		out[k] = val
	}
	return out, nil
}

func toLinks(v starlark.Value) ([]string, error) {
	var items []starlark.Value
	switch x := v.(type) {
	case nil, starlark.NoneType:
	case *starlark.List:
		for i := 0; i < x.Len(); i++ {
			items = append(items, x.Index(i))
		}
	default:
		items = []starlark.Value{v}
	}
	var out []string
	for _, it := range items {
		switch l := it.(type) {
		case linkValue:
			out = append(out, l.url)
		case starlark.String:
			out = append(out, string(l))
		default:
			return nil, fmt.Errorf("links: want link() or a URL, got %s", it.Type())
		}
	}
	return out, nil
}

func (r *tiltRun) builtin(name string, fn func(*starlark.Thread, *starlark.Builtin, starlark.Tuple, []starlark.Tuple) (starlark.Value, error)) *starlark.Builtin {
	return starlark.NewBuiltin(name, fn)
}

func (r *tiltRun) predeclared() starlark.StringDict {
	none := func(name string, params ...string) *starlark.Builtin {
		return r.builtin(name, func(_ *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
			vals := make([]any, 0, 2*len(params))
			for _, p := range params {
				var v starlark.Value
				vals = append(vals, p, &v)
			}
			return starlark.None, starlark.UnpackArgs(b.Name(), args, kwargs, vals...)
		})
	}
	osPath := &starlarkstruct.Module{Name: "os.path", Members: starlark.StringDict{
		"join": r.builtin("os.path.join", func(_ *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
			var parts []string
			for _, a := range args {
				s, ok := starlark.AsString(a)
				if !ok {
					return nil, fmt.Errorf("os.path.join() only accepts strings")
				}
				parts = append(parts, s)
			}
			return starlark.String(filepath.Join(parts...)), nil
		}),
		"dirname":  r.pathFunc("os.path.dirname", func(_ *starlark.Thread, p string) starlark.Value { return starlark.String(filepath.Dir(p)) }),
		"basename": r.pathFunc("os.path.basename", func(_ *starlark.Thread, p string) starlark.Value { return starlark.String(filepath.Base(p)) }),
		"abspath":  r.pathFunc("os.path.abspath", func(t *starlark.Thread, p string) starlark.Value { return starlark.String(absPath(t, p)) }),
		"exists": r.pathFunc("os.path.exists", func(t *starlark.Thread, p string) starlark.Value {
			_, err := os.Stat(absPath(t, p))
			return starlark.Bool(err == nil)
		}),
	}}
	osMod := &starlarkstruct.Module{Name: "os", Members: starlark.StringDict{
		"getenv": r.builtin("os.getenv", func(_ *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
			var key string
			var def starlark.Value = starlark.None
			if err := starlark.UnpackArgs(b.Name(), args, kwargs, "key", &key, "default?", &def); err != nil {
				return nil, err
			}
			if v, ok := r.Env[key]; ok {
				return starlark.String(v), nil
			}
			return def, nil
		}),
		"path": osPath,
		"name": starlark.String("posix"),
	}}
	configMod := &starlarkstruct.Module{Name: "config", Members: starlark.StringDict{
		"main_path":          starlark.String(r.Main),
		"main_dir":           starlark.String(filepath.Dir(r.Main)),
		"define_bool":        r.define("bool"),
		"define_string":      r.define("string"),
		"define_string_list": r.define("string_list"),
		"define_object":      r.define("object"),
		"parse": r.builtin("config.parse", func(_ *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
			if err := starlark.UnpackArgs(b.Name(), args, kwargs); err != nil {
				return nil, err
			}
			d := starlark.NewDict(len(r.Args))
			for k, v := range r.Args {
				if _, ok := r.Defined[k]; !ok {
					return nil, fmt.Errorf("config.parse: %q is not defined by the Tiltfile", k)
				}
				_ = d.SetKey(starlark.String(k), v)
			}
			return d, nil
		}),
	}}
	return starlark.StringDict{
		"docker_build":   r.builtin("docker_build", r.dockerBuild),
		"k8s_yaml":       r.builtin("k8s_yaml", r.k8sYAML),
		"helm":           r.builtin("helm", r.helm),
		"k8s_resource":   r.builtin("k8s_resource", r.k8sResource),
		"local_resource": r.builtin("local_resource", r.localResource),
		"sync":           r.builtin("sync", r.sync),
		"run":            r.builtin("run", r.run),
		"port_forward":   r.builtin("port_forward", r.portForward),
		"link":           r.builtin("link", r.link),
		"include":        r.builtin("include", r.include),
		"read_file":      r.builtin("read_file", r.readFile),
		"watch_file":     r.builtin("watch_file", r.watchFile),
		"blob": r.builtin("blob", func(_ *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
			var s string
			err := starlark.UnpackArgs(b.Name(), args, kwargs, "contents", &s)
			return blobValue{s}, err
		}),
		"local": r.builtin("local", func(*starlark.Thread, *starlark.Builtin, starlark.Tuple, []starlark.Tuple) (starlark.Value, error) {
			return nil, fmt.Errorf("local() runs a command while the Tiltfile loads; keep commands in local_resource")
		}),
		"fail": r.builtin("fail", func(_ *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
			var msg string
			if err := starlark.UnpackArgs(b.Name(), args, kwargs, "msg", &msg); err != nil {
				return nil, err
			}
			return nil, fmt.Errorf("fail: %s", msg)
		}),
		"warn": none("warn", "msg"),
		"k8s_context": r.builtin("k8s_context", func(*starlark.Thread, *starlark.Builtin, starlark.Tuple, []starlark.Tuple) (starlark.Value, error) {
			return starlark.String("kind-kind"), nil
		}),
		"allow_k8s_contexts":  none("allow_k8s_contexts", "contexts"),
		"update_settings":     none("update_settings", "max_parallel_updates?", "k8s_upsert_timeout_secs?", "suppress_unused_image_warnings?", "k8s_server_side_apply?"),
		"version_settings":    none("version_settings", "check_updates?", "constraint?"),
		"secret_settings":     none("secret_settings", "disable_scrub?"),
		"TRIGGER_MODE_AUTO":   triggerMode("TRIGGER_MODE_AUTO"),
		"TRIGGER_MODE_MANUAL": triggerMode("TRIGGER_MODE_MANUAL"),
		"struct":              starlark.NewBuiltin("struct", starlarkstruct.Make),
		"os":                  osMod,
		"config":              configMod,
	}
}

func (r *tiltRun) pathFunc(name string, f func(*starlark.Thread, string) starlark.Value) *starlark.Builtin {
	return r.builtin(name, func(t *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
		var p string
		if err := starlark.UnpackArgs(b.Name(), args, kwargs, "path", &p); err != nil {
			return nil, err
		}
		return f(t, p), nil
	})
}

func (r *tiltRun) define(kind string) *starlark.Builtin {
	return r.builtin("config.define_"+kind, func(_ *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
		var name, usage string
		var isArgs bool
		if err := starlark.UnpackArgs(b.Name(), args, kwargs, "name", &name, "args?", &isArgs, "usage?", &usage); err != nil {
			return nil, err
		}
		if r.Defined == nil {
			r.Defined = map[string]string{}
		}
		if _, dup := r.Defined[name]; dup {
			return nil, fmt.Errorf("config.define_%s: %q defined twice", kind, name)
		}
		r.Defined[name] = kind
		return starlark.None, nil
	})
}

// run executes the main Tiltfile.
func (r *tiltRun) exec() error {
	r.extCache = map[string]starlark.StringDict{}
	thread := &starlark.Thread{
		Name:  "tiltfile",
		Print: func(_ *starlark.Thread, msg string) { r.Printed = append(r.Printed, msg) },
		Load:  r.load,
	}
	_, err := r.execFile(thread, r.Main)
	return err
}

func (r *tiltRun) execFile(thread *starlark.Thread, path string) (starlark.StringDict, error) {
	src, ok := r.Overlay[path]
	if !ok {
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, err
		}
		src = string(b)
	}
	r.Files = append(r.Files, path)
	prev := thread.Local(fileKey)
	thread.SetLocal(fileKey, path)
	defer thread.SetLocal(fileKey, prev)
	return starlark.ExecFileOptions(tiltFileOptions, thread, path, src, r.predeclared())
}

func (r *tiltRun) load(thread *starlark.Thread, module string) (starlark.StringDict, error) {
	if g, ok := r.extCache[module]; ok {
		return g, nil
	}
	var g starlark.StringDict
	var err error
	switch {
	case module == "ext://restart_process":
		g, err = starlark.ExecFileOptions(tiltFileOptions, thread, module, restartProcessExt, r.predeclared())
	case strings.HasPrefix(module, "ext://"):
		return nil, fmt.Errorf("load(%q): this extension is not faked by deploytest; add it to tiltfake_test.go", module)
	default:
		g, err = r.execFile(thread, absPath(thread, module))
	}
	if err == nil {
		r.extCache[module] = g
	}
	return g, err
}

func (r *tiltRun) include(thread *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var p string
	if err := starlark.UnpackArgs(b.Name(), args, kwargs, "path", &p); err != nil {
		return nil, err
	}
	_, err := r.execFile(thread, absPath(thread, p))
	return starlark.None, err
}

func (r *tiltRun) dockerBuild(thread *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var ref, context, target, network, platform string
	var dockerfile, buildArgs, dfContents, liveUpdate, ignore, only, entrypoint, ssh, secret, extraTag, containerArgs, cacheFrom, extraHosts starlark.Value
	var matchInEnv, pull bool
	if err := starlark.UnpackArgs(b.Name(), args, kwargs,
		"ref", &ref, "context", &context, "build_args?", &buildArgs, "dockerfile?", &dockerfile,
		"dockerfile_contents?", &dfContents, "live_update?", &liveUpdate, "match_in_env_vars?", &matchInEnv,
		"ignore?", &ignore, "only?", &only, "entrypoint?", &entrypoint, "target?", &target, "ssh?", &ssh,
		"network?", &network, "secret?", &secret, "extra_tag?", &extraTag, "container_args?", &containerArgs,
		"cache_from?", &cacheFrom, "pull?", &pull, "platform?", &platform, "extra_hosts?", &extraHosts); err != nil {
		return nil, err
	}
	bd := &tiltBuild{Ref: ref, Context: absPath(thread, context), Target: target}
	var err error
	if bd.BuildArgs, err = toStringMap(buildArgs, "build_args"); err != nil {
		return nil, err
	}
	if dfContents != nil && dfContents != starlark.None {
		s, _ := toStrings(dfContents, "dockerfile_contents")
		bd.DockerfileContents = strings.Join(s, "")
	} else if df, ok := starlark.AsString(dockerfile); ok {
		bd.Dockerfile = absPath(thread, df) // relative to the Tiltfile
	} else {
		bd.Dockerfile = filepath.Join(bd.Context, "Dockerfile") // Tilt's default
	}
	if bd.Only, err = toStrings(only, "only"); err != nil {
		return nil, err
	}
	for _, o := range bd.Only {
		if strings.Contains(o, "*") {
			return nil, fmt.Errorf("'only' does not support '*' file globs. Must be a real path: %s", o)
		}
	}
	if bd.Entrypoint, err = toStrings(entrypoint, "entrypoint"); err != nil {
		return nil, err
	}
	if l, ok := liveUpdate.(*starlark.List); ok {
		for i := 0; i < l.Len(); i++ {
			s, ok := l.Index(i).(stepValue)
			if !ok {
				return nil, fmt.Errorf("live_update: want sync() or run() steps, got %s", l.Index(i).Type())
			}
			bd.LiveUpdate = append(bd.LiveUpdate, s.liveStep)
		}
	}
	for _, x := range r.Builds {
		if x.Ref == ref {
			return nil, fmt.Errorf("docker_build: image %q is built twice", ref)
		}
	}
	r.Builds = append(r.Builds, bd)
	return starlark.None, nil
}

func (r *tiltRun) k8sYAML(thread *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var y starlark.Value
	var allowDup bool
	if err := starlark.UnpackArgs(b.Name(), args, kwargs, "yaml", &y, "allow_duplicates?", &allowDup); err != nil {
		return nil, err
	}
	var blobs []blobValue
	var paths []string
	switch v := y.(type) {
	case blobValue:
		blobs = append(blobs, v)
	case *starlark.List:
		for i := 0; i < v.Len(); i++ {
			switch it := v.Index(i).(type) {
			case blobValue:
				blobs = append(blobs, it)
			case starlark.String:
				paths = append(paths, string(it))
			default:
				return nil, fmt.Errorf("k8s_yaml: want paths or blobs, got %s", it.Type())
			}
		}
	case starlark.String:
		paths = append(paths, string(v))
	default:
		return nil, fmt.Errorf("k8s_yaml: want a path, a list or a blob, got %s", y.Type())
	}
	for _, p := range paths {
		p = absPath(thread, p)
		data, ok := r.Overlay[p]
		if !ok {
			b, err := os.ReadFile(p)
			if err != nil {
				return nil, fmt.Errorf("k8s_yaml: %w", err)
			}
			data = string(b)
		}
		r.addDocs(p, data)
		r.Watched = append(r.Watched, p)
	}
	for _, bl := range blobs {
		r.addDocs("blob", bl.text)
	}
	return starlark.None, nil
}

func (r *tiltRun) addDocs(source, text string) {
	for _, doc := range strings.Split("\n"+text, "\n---") {
		if strings.TrimSpace(stripComments(doc)) != "" {
			r.Docs = append(r.Docs, tiltDoc{Source: source, YAML: doc})
		}
	}
}

func (r *tiltRun) helm(thread *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var chart, name, namespace, kubeVersion string
	var values, set starlark.Value
	var skipCRDs bool
	if err := starlark.UnpackArgs(b.Name(), args, kwargs, "pathToChartDir", &chart, "name?", &name, "namespace?", &namespace,
		"values?", &values, "set?", &set, "kube_version?", &kubeVersion, "skip_crds?", &skipCRDs); err != nil {
		return nil, err
	}
	h := &tiltHelm{Chart: absPath(thread, chart), Name: name, Namespace: namespace}
	vs, err := toStrings(values, "values")
	if err != nil {
		return nil, err
	}
	for _, v := range vs {
		h.Values = append(h.Values, absPath(thread, v))
	}
	if h.Set, err = toStrings(set, "set"); err != nil {
		return nil, err
	}
	if name != ReleaseName {
		return nil, fmt.Errorf("helm: release name %q; the values and Secrets assume %q", name, ReleaseName)
	}
	ns := namespace
	if ns == "" {
		ns = "default"
	}
	h.Rendered, err = renderChart(h.Chart, ns, h.Values, h.Set)
	if err != nil {
		return nil, fmt.Errorf("helm: %w", err)
	}
	r.Helms = append(r.Helms, h)
	r.Watched = append(r.Watched, h.Chart)
	return blobValue{h.Rendered.Manifest}, nil
}

func (r *tiltRun) portForwards(v starlark.Value) ([]portForward, error) {
	var items []starlark.Value
	switch x := v.(type) {
	case nil, starlark.NoneType:
	case *starlark.List:
		for i := 0; i < x.Len(); i++ {
			items = append(items, x.Index(i))
		}
	default:
		items = []starlark.Value{v}
	}
	var out []portForward
	for _, it := range items {
		switch p := it.(type) {
		case pfValue:
			out = append(out, p.portForward)
		case starlark.Int:
			n, _ := p.Int64()
			out = append(out, portForward{Local: int(n), Container: int(n)})
		case starlark.String:
			a, c, found := strings.Cut(string(p), ":")
			if !found {
				c = a
			}
			ln, err1 := strconv.Atoi(a)
			cn, err2 := strconv.Atoi(c)
			if err1 != nil || err2 != nil {
				return nil, fmt.Errorf("port_forwards: %q is not LOCAL:CONTAINER", p)
			}
			out = append(out, portForward{Local: ln, Container: cn})
		default:
			return nil, fmt.Errorf("port_forwards: unexpected %s", it.Type())
		}
	}
	return out, nil
}

func (r *tiltRun) k8sResource(_ *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var workload, newName, podReadiness, discovery string
	var pfs, extra, trigger, deps, objects, links, labels starlark.Value
	autoInit := true
	if err := starlark.UnpackArgs(b.Name(), args, kwargs, "workload?", &workload, "new_name?", &newName,
		"port_forwards?", &pfs, "extra_pod_selectors?", &extra, "trigger_mode?", &trigger,
		"resource_deps?", &deps, "objects?", &objects, "auto_init?", &autoInit, "pod_readiness?", &podReadiness,
		"links?", &links, "labels?", &labels, "discovery_strategy?", &discovery); err != nil {
		return nil, err
	}
	res := &tiltResource{Workload: workload, NewName: newName, AutoInit: autoInit, PodReadiness: podReadiness, DiscoveryStrategy: discovery}
	var err error
	if res.PortForwards, err = r.portForwards(pfs); err != nil {
		return nil, err
	}
	if res.ResourceDeps, err = toStrings(deps, "resource_deps"); err != nil {
		return nil, err
	}
	if res.Objects, err = toStrings(objects, "objects"); err != nil {
		return nil, err
	}
	if res.Labels, err = toStrings(labels, "labels"); err != nil {
		return nil, err
	}
	if res.Links, err = toLinks(links); err != nil {
		return nil, err
	}
	if tm, ok := trigger.(triggerMode); ok {
		res.Trigger = string(tm)
	}
	res.ExtraPodSelectors = extra != nil && extra != starlark.None
	r.Res = append(r.Res, res)
	return starlark.None, nil
}

func (r *tiltRun) localResource(thread *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var name, dir, serveDir string
	var cmd, deps, trigger, rdeps, ignore, serveCmd, cmdBat, serveCmdBat, links, labels, env, serveEnv, probe starlark.Value
	var allowParallel bool
	autoInit := true
	if err := starlark.UnpackArgs(b.Name(), args, kwargs, "name", &name, "cmd", &cmd, "deps?", &deps,
		"trigger_mode?", &trigger, "resource_deps?", &rdeps, "ignore?", &ignore, "auto_init?", &autoInit,
		"serve_cmd?", &serveCmd, "cmd_bat?", &cmdBat, "serve_cmd_bat?", &serveCmdBat, "allow_parallel?", &allowParallel,
		"links?", &links, "labels?", &labels, "env?", &env, "serve_env?", &serveEnv, "readiness_probe?", &probe,
		"dir?", &dir, "serve_dir?", &serveDir); err != nil {
		return nil, err
	}
	lr := &tiltLocal{Name: name, AutoInit: autoInit, Dir: filepath.Dir(currentFile(thread))}
	if dir != "" {
		lr.Dir = absPath(thread, dir)
	}
	c, err := toStrings(cmd, "cmd")
	if err != nil {
		return nil, err
	}
	lr.Cmd = strings.Join(c, " ")
	ds, err := toStrings(deps, "deps")
	if err != nil {
		return nil, err
	}
	for _, d := range ds {
		lr.Deps = append(lr.Deps, absPath(thread, d))
	}
	if lr.Ignore, err = toStrings(ignore, "ignore"); err != nil {
		return nil, err
	}
	if lr.ResourceDeps, err = toStrings(rdeps, "resource_deps"); err != nil {
		return nil, err
	}
	if lr.Labels, err = toStrings(labels, "labels"); err != nil {
		return nil, err
	}
	if lr.Links, err = toLinks(links); err != nil {
		return nil, err
	}
	if lr.Env, err = toStringMap(env, "env"); err != nil {
		return nil, err
	}
	if tm, ok := trigger.(triggerMode); ok {
		lr.Trigger = string(tm)
	}
	r.Locals = append(r.Locals, lr)
	return starlark.None, nil
}

func (r *tiltRun) sync(thread *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var local, remote string
	if err := starlark.UnpackArgs(b.Name(), args, kwargs, "local_path", &local, "remote_path", &remote); err != nil {
		return nil, err
	}
	return stepValue{liveStep{Kind: "sync", Local: absPath(thread, local), Remote: remote}}, nil
}

func (r *tiltRun) run(_ *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var cmd, trigger starlark.Value
	var echoOff bool
	if err := starlark.UnpackArgs(b.Name(), args, kwargs, "cmd", &cmd, "trigger?", &trigger, "echo_off?", &echoOff); err != nil {
		return nil, err
	}
	c, err := toStrings(cmd, "cmd")
	return stepValue{liveStep{Kind: "run", Cmd: strings.Join(c, " ")}}, err
}

func (r *tiltRun) portForward(_ *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var local int
	var container, name, linkPath, host starlark.Value
	if err := starlark.UnpackArgs(b.Name(), args, kwargs, "local_port", &local, "container_port?", &container,
		"name?", &name, "link_path?", &linkPath, "host?", &host); err != nil {
		return nil, err
	}
	pf := portForward{Local: local, Container: local}
	if n, ok := container.(starlark.Int); ok {
		c, _ := n.Int64()
		pf.Container = int(c)
	}
	pf.Name, _ = starlark.AsString(name)
	pf.LinkPath, _ = starlark.AsString(linkPath)
	return pfValue{pf}, nil
}

func (r *tiltRun) link(_ *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var url, name string
	err := starlark.UnpackArgs(b.Name(), args, kwargs, "url", &url, "name?", &name)
	return linkValue{url, name}, err
}

func (r *tiltRun) readFile(thread *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var p string
	var def starlark.Value
	if err := starlark.UnpackArgs(b.Name(), args, kwargs, "file_path", &p, "default?", &def); err != nil {
		return nil, err
	}
	p = absPath(thread, p)
	r.Watched = append(r.Watched, p)
	data, err := os.ReadFile(p)
	if err != nil {
		if s, ok := starlark.AsString(def); ok {
			return blobValue{s}, nil
		}
		return nil, err
	}
	return blobValue{string(data)}, nil
}

func (r *tiltRun) watchFile(thread *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var p string
	if err := starlark.UnpackArgs(b.Name(), args, kwargs, "file_path", &p); err != nil {
		return nil, err
	}
	r.Watched = append(r.Watched, absPath(thread, p))
	return starlark.None, nil
}

// resourceName is the name Tilt shows for a k8s_resource.
func (res *tiltResource) name() string {
	if res.NewName != "" {
		return res.NewName
	}
	return res.Workload
}

func (r *tiltRun) resource(name string) *tiltResource {
	for _, res := range r.Res {
		if res.name() == name {
			return res
		}
	}
	return nil
}

func (r *tiltRun) build(ref string) *tiltBuild {
	i := slices.IndexFunc(r.Builds, func(b *tiltBuild) bool { return b.Ref == ref })
	if i < 0 {
		return nil
	}
	return r.Builds[i]
}
