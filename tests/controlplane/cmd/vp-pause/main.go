// Command vp-pause is the pod sandbox process of the real-node test site (scripts/site.sh), doing what the
// upstream pause container does: hold the pod's namespaces open, reap orphaned children (it is PID 1 of the
// pod when the pod shares its process namespace), and exit on SIGINT or SIGTERM. Built statically, so its image
// (scripts/build-images.sh) holds this one file.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for sig := range sigs {
		if sig != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			var status syscall.WaitStatus
			pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
