// Command wsecho is a tiny echo server for workspace tests: on every TCP connection it first
// writes one line "hello from <hostname>\n", then echoes back every byte it reads; every UDP
// datagram is sent back as it came. Build it static (CGO_ENABLED=0) to run in a busybox image.
//
//	wsecho -tcp :8080 -udp :8081
package main

import (
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"sync"
)

func main() {
	tcp := flag.String("tcp", ":8080", "TCP address to serve (empty: none)")
	udp := flag.String("udp", ":8081", "UDP address to serve (empty: none)")
	flag.Parse()
	host, _ := os.Hostname()
	var wg sync.WaitGroup
	if *tcp != "" {
		ln, err := net.Listen("tcp", *tcp)
		if err != nil {
			log.Fatal(err)
		}
		wg.Go(func() { serveTCP(ln, host) })
	}
	if *udp != "" {
		pc, err := net.ListenPacket("udp", *udp)
		if err != nil {
			log.Fatal(err)
		}
		wg.Go(func() { serveUDP(pc) })
	}
	log.Printf("wsecho on %s: tcp %q udp %q", host, *tcp, *udp)
	wg.Wait()
}

func serveTCP(ln net.Listener, host string) {
	for {
		c, err := ln.Accept()
		if err != nil {
			log.Fatal(err)
		}
		go func() {
			defer c.Close()
			fmt.Fprintf(c, "hello from %s\n", host)
			io.Copy(c, c)
		}()
	}
}

func serveUDP(pc net.PacketConn) {
	buf := make([]byte, 64<<10)
	for {
		n, addr, err := pc.ReadFrom(buf)
		if err != nil {
			log.Fatal(err)
		}
		pc.WriteTo(buf[:n], addr)
	}
}
