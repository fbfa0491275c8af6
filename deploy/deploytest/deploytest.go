// Package deploytest checks the deploy artefacts without a Docker engine or
// a cluster: the Helm chart (helm lint --strict, helm template through Helm's
// Go packages, every object decoded strictly into the Kubernetes API types),
// the Tiltfile (run by the Starlark interpreter against a recording of Tilt's
// builtins) and the Dockerfiles (parsed with BuildKit's parser, and their
// build stage replayed with the local Go toolchain).
//
// Run with `make test-deploy` (cd deploy/deploytest && GOWORK=off go test ./...).
// The module stays out of go.work so that Helm's and Kubernetes' dependencies
// never change the versions the services are built with.
package deploytest

import (
	"fmt"
	"os"
	"path/filepath"
)

// RepoRoot is the repository root: the nearest parent holding go.work.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.work")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no go.work above the working directory")
		}
		dir = parent
	}
}

// Paths of the artefacts, relative to the repository root.
const (
	ChartDir      = "deploy/helm/optout-sync"
	ImagesDir     = "deploy/images"
	TiltDir       = "tilt"
	ReleaseName   = "optout-sync"
	TestNamespace = "optout"
)

// Services are the binaries that get a production image, each built from
// ./services/<name> by DockerfileOf(name).
var Services = []string{"pusher", "reconciler", "admin", "sfsandbox", "optoutctl"}

// SharedDockerfile builds every service of the root module, named by the
// SERVICE build argument; the emulator, its own module with its own files
// and ports, keeps deploy/images/sfsandbox/Dockerfile.
const SharedDockerfile = ImagesDir + "/Dockerfile"

// DockerfileOf is the Dockerfile that builds svc, relative to the root.
func DockerfileOf(svc string) string {
	if svc == "sfsandbox" {
		return ImagesDir + "/sfsandbox/Dockerfile"
	}
	return SharedDockerfile
}

// ValuesFiles are the chart's values sets: "" is the defaults alone.
var ValuesFiles = []string{"", "values-prod.yaml", "values-dev.yaml"}
