// SPDX-License-Identifier: MIT
// pf-go-listen: a Go server built with CGO_ENABLED=0, its own system calls
// past libc: the shim cannot see it, the cgroup programs do.
//   pf-go-listen tcp|tcp6 ADDR:PORT    prints "listen RET ERRNO[ ADDR]"
package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
)

func main() {
	l, err := net.Listen(os.Args[1], os.Args[2])
	if err != nil {
		var errno syscall.Errno
		if errors.As(err, &errno) && errno == syscall.EADDRINUSE {
			fmt.Println("listen -1 EADDRINUSE")
		} else if errors.As(err, &errno) && errno == syscall.EACCES {
			fmt.Println("listen -1 EACCES")
		} else {
			fmt.Println("listen -1", err)
		}
		return
	}
	fmt.Println("listen 0 0", l.Addr())
	l.Close()
}
