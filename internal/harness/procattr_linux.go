package harness

import "syscall"

// procAttr puts a child in its own process group, so a Ctrl-C reaches only
// the parent, which stops its children in order; and makes it die with the
// parent: a test killed by its timeout runs no cleanup, and a nats-server
// or pusher left behind would hold ports and disk on a shared machine.
func procAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
