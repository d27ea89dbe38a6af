package ctrd_test

import (
	"bytes"
	"strconv"

	"github.com/vishvananda/netlink"

	"meshwork.dev/workspace/image"
)

func netlinkParseAddr(s string) (*netlink.Addr, error) {
	a, err := netlink.ParseAddr(s)
	if err == nil {
		a.Flags = 0x02 // IFA_F_NODAD
	}
	return a, err
}

func itoa(n int) string { return strconv.Itoa(n) }

func bytesReader(b []byte) *bytes.Reader { return bytes.NewReader(b) }

func imageConfigCmd(script string) image.Config {
	return image.Config{Cmd: []string{"/bin/sh", "-c", script}}
}
