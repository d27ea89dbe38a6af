package ctrd_test

import "github.com/vishvananda/netlink"

func netlinkParseAddr(s string) (*netlink.Addr, error) {
	a, err := netlink.ParseAddr(s)
	if err == nil {
		a.Flags = 0x02 // IFA_F_NODAD
	}
	return a, err
}
