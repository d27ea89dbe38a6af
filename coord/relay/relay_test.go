package relay

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"net/netip"
	"testing"
	"time"

	"tailscale.com/derp"
	"tailscale.com/derp/derphttp"
	"tailscale.com/net/netmon"
	"tailscale.com/types/key"
)

// TestRelayAdmitsMeshMachinesOnly: a node key Admit knows relays packets; any other key is
// cut off before it can send or receive a thing.
func TestRelayAdmitsMeshMachinesOnly(t *testing.T) {
	member, stranger := key.NewNode(), key.NewNode()
	addr := freeAddr(t)
	cert, pool := selfSigned(t)
	r, err := Listen(Config{Addr: addr, Name: "c1", Cert: cert, MeshKey: meshKey(t), Logf: t.Logf,
		Admit: func(_ context.Context, k key.NodePublic) bool { return k == member.Public() }})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()

	if err := relayToSelf(t, addr, pool, member); err != nil {
		t.Errorf("a machine on the mesh: %v; want its packet relayed", err)
	}
	if err := relayToSelf(t, addr, pool, stranger); err == nil {
		t.Errorf("a key no machine on the mesh has was relayed; want it refused")
	}
}

// relayToSelf connects to the relay as k and sends a packet to itself through it.
func relayToSelf(t *testing.T, addr string, roots *x509.CertPool, k key.NodePrivate) error {
	c, err := derphttp.NewClient(k, "https://"+addr+"/derp", t.Logf, netmon.NewStatic())
	if err != nil {
		return err
	}
	defer c.Close()
	c.TLSConfig = &tls.Config{RootCAs: roots}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Connect(ctx); err != nil {
		return err
	}
	msg := []byte("hello through the relay")
	if err := c.Send(k.Public(), msg); err != nil {
		return err
	}
	got := make(chan error, 1)
	go func() {
		for {
			m, err := c.Recv()
			if err != nil {
				got <- err
				return
			}
			if p, ok := m.(derp.ReceivedPacket); ok && bytes.Equal(p.Data, msg) {
				got <- nil
				return
			}
		}
	}()
	select {
	case err := <-got:
		return err
	case <-ctx.Done():
		c.Close()
		return ctx.Err()
	}
}

func meshKey(t *testing.T) key.DERPMesh {
	k, err := key.ParseDERPMesh("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef")
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func freeAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func selfSigned(t *testing.T) (tls.Certificate, *x509.CertPool) {
	priv, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "relay"},
		IPAddresses: []net.IP{netip.MustParseAddr("127.0.0.1").AsSlice()}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &priv.PublicKey, priv)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(c)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: priv}, pool
}
