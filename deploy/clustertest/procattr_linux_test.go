package clustertest

import "syscall"

// procAttr makes a child die with the test process: a test killed by its
// timeout runs no cleanup, and a nats-server or pusher left behind would
// hold ports and disk on a machine other engineers share.
func procAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
