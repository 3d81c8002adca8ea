// The node's sandbox ("pause") process: it holds a pod's namespaces and does nothing else until it is stopped.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	// As PID 1 of a pod sharing its process namespace, reap the children that end.
	signal.Notify(make(chan os.Signal, 1), syscall.SIGCHLD)
	<-stop
}
