// Package clustertest proves optout-sync on what users who outgrow one
// machine run: a 3-node JetStream cluster of separate nats-server processes
// (file storage, sync_interval: always, everything at 3 replicas), two
// pusher processes and the reconciler's Redis lease. Its one test
// (make test-cluster) bursts mixed opt-outs and resubscribes while it
// kill -9s the leaders of the events stream and the ledger bucket and one
// pusher, then compares every person with the reference model of issue 10;
// then it restarts Redis under a reconcile run and counts the runs of the
// slot.
//
// The test is heavy (minutes, several processes), so it runs only with
// OPTOUT_CLUSTER=1; plain make test skips it.
package clustertest
