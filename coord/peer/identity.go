package peer

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// serverName is the name every replica certificate carries and every replica verifies: peers
// are dialed by address, and trust comes from the cluster CA, not from DNS.
const serverName = "coord.meshwork.internal"

// An Identity is a replica's place in the cluster: the cluster CA (certificate and key: any
// replica can admit the next one) and the replica's own certificate, whose CommonName is its ID.
type Identity struct {
	ID     string
	CA     *x509.Certificate
	CAKey  *ecdsa.PrivateKey
	Cert   tls.Certificate
	caPool *x509.CertPool
}

// NewCluster makes a new cluster CA and the first replica's identity in it.
func NewCluster(id string) (*Identity, error) {
	caKey, err := NewKey()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "meshwork cluster CA", Organization: []string{"meshwork"}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().AddDate(10, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	ca, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	key, err := NewKey()
	if err != nil {
		return nil, err
	}
	leaf, err := issue(ca, caKey, id, &key.PublicKey)
	if err != nil {
		return nil, err
	}
	return newIdentity(id, ca, caKey, leaf, key)
}

// NewKey makes a replica's private key.
func NewKey() (*ecdsa.PrivateKey, error) {
	return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
}

// Issue signs a certificate for replica id's public key (PKIX DER), as PEM.
func (id *Identity) Issue(replica string, pubDER []byte) ([]byte, error) {
	pub, err := x509.ParsePKIXPublicKey(pubDER)
	if err != nil {
		return nil, fmt.Errorf("public key: %w", err)
	}
	der, err := issue(id.CA, id.CAKey, replica, pub)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), nil
}

func issue(ca *x509.Certificate, caKey *ecdsa.PrivateKey, id string, pub any) ([]byte, error) {
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: id, Organization: []string{"meshwork"}},
		DNSNames:     []string{serverName},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().AddDate(5, 0, 0),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	return x509.CreateCertificate(rand.Reader, tmpl, ca, pub, caKey)
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	return n
}

func newIdentity(id string, ca *x509.Certificate, caKey *ecdsa.PrivateKey, leafDER []byte, key *ecdsa.PrivateKey) (*Identity, error) {
	leaf, err := x509.ParseCertificate(leafDER)
	if err != nil {
		return nil, err
	}
	if leaf.Subject.CommonName != id {
		return nil, fmt.Errorf("certificate is for %q, not %q", leaf.Subject.CommonName, id)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool(ca), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return nil, fmt.Errorf("certificate not from the cluster CA: %w", err)
	}
	return &Identity{
		ID: id, CA: ca, CAKey: caKey, caPool: pool(ca),
		Cert: tls.Certificate{Certificate: [][]byte{leafDER}, PrivateKey: key, Leaf: leaf},
	}, nil
}

func pool(ca *x509.Certificate) *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca)
	return p
}

// ServerCert issues a TLS server certificate for ip from the cluster CA (the DERP relay's:
// other replicas verify it with Pool; nodes do not know the CA).
func (id *Identity) ServerCert(ip net.IP) (tls.Certificate, error) {
	key, err := NewKey()
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: "meshwork relay " + ip.String(), Organization: []string{"meshwork"}},
		IPAddresses:  []net.IP{ip},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().AddDate(1, 0, 0),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, id.CA, &key.PublicKey, id.CAKey)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}

// Pool is the cluster CA as a certificate pool.
func (id *Identity) Pool() *x509.CertPool { return id.caPool }

// CAKeyDER is the CA key, for deriving the join token.
func (id *Identity) CAKeyDER() []byte {
	der, _ := x509.MarshalECPrivateKey(id.CAKey)
	return der
}

// Files of an identity in its directory.
const (
	caFile     = "ca.pem"
	caKeyFile  = "ca-key.pem"
	certFile   = "node.pem"
	keyFile    = "node-key.pem"
	pemCert    = "CERTIFICATE"
	pemECKey   = "EC PRIVATE KEY"
	secretMode = 0o600
)

// Save writes the identity to dir (made 0700; key files 0600).
func (id *Identity) Save(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	caKey, _ := x509.MarshalECPrivateKey(id.CAKey)
	key, _ := x509.MarshalECPrivateKey(id.Cert.PrivateKey.(*ecdsa.PrivateKey))
	files := map[string]*pem.Block{
		caFile:    {Type: pemCert, Bytes: id.CA.Raw},
		caKeyFile: {Type: pemECKey, Bytes: caKey},
		certFile:  {Type: pemCert, Bytes: id.Cert.Certificate[0]},
		keyFile:   {Type: pemECKey, Bytes: key},
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), pem.EncodeToMemory(b), secretMode); err != nil {
			return err
		}
	}
	return nil
}

// Load reads an identity saved by Save.
func Load(dir string) (*Identity, error) {
	var blocks [4][]byte
	for i, name := range []string{caFile, caKeyFile, certFile, keyFile} {
		b, err := readPEM(filepath.Join(dir, name))
		if err != nil {
			return nil, err
		}
		blocks[i] = b
	}
	return FromDER(blocks[0], blocks[1], blocks[2], blocks[3])
}

// FromPEM builds an identity from what a joining replica was sent and its own key.
func FromPEM(caPEM, caKeyPEM, certPEM []byte, key *ecdsa.PrivateKey) (*Identity, error) {
	der := func(b []byte) []byte {
		if p, _ := pem.Decode(b); p != nil {
			return p.Bytes
		}
		return nil
	}
	keyDER, _ := x509.MarshalECPrivateKey(key)
	return FromDER(der(caPEM), der(caKeyPEM), der(certPEM), keyDER)
}

// FromDER builds an identity from its parts.
func FromDER(caDER, caKeyDER, certDER, keyDER []byte) (*Identity, error) {
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, fmt.Errorf("cluster CA: %w", err)
	}
	caKey, err := x509.ParseECPrivateKey(caKeyDER)
	if err != nil {
		return nil, fmt.Errorf("cluster CA key: %w", err)
	}
	key, err := x509.ParseECPrivateKey(keyDER)
	if err != nil {
		return nil, fmt.Errorf("replica key: %w", err)
	}
	leaf, err := x509.ParseCertificate(certDER)
	if err != nil {
		return nil, fmt.Errorf("replica certificate: %w", err)
	}
	return newIdentity(leaf.Subject.CommonName, ca, caKey, certDER, key)
}

// PEM returns the CA certificate and key as PEM, to hand to a joining replica.
func (id *Identity) PEM() (caPEM, caKeyPEM []byte) {
	caKey, _ := x509.MarshalECPrivateKey(id.CAKey)
	return pem.EncodeToMemory(&pem.Block{Type: pemCert, Bytes: id.CA.Raw}),
		pem.EncodeToMemory(&pem.Block{Type: pemECKey, Bytes: caKey})
}

func readPEM(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	p, _ := pem.Decode(b)
	if p == nil {
		return nil, errors.New(path + ": no PEM block")
	}
	return p.Bytes, nil
}

// tlsConfig is the mutual-TLS configuration for the given ALPN protocols: present our certificate,
// require and verify the peer's against the cluster CA.
func (id *Identity) tlsConfig(alpn ...string) *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{id.Cert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    id.caPool,
		RootCAs:      id.caPool,
		ServerName:   serverName,
		NextProtos:   alpn,
	}
}
