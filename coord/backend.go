package coord

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"

	"meshwork.dev/coord/api"
	"meshwork.dev/coord/fsm"
	"meshwork.dev/coord/keys"
	"meshwork.dev/coord/peer"
	"meshwork.dev/coord/replica"
)

// methodApply forwards a command to the leader.
const methodApply = "coord.apply"

// backend is the replica as the admin API sees it.
type backend struct {
	fsm    *fsm.FSM
	expect int // voters needed before writes are accepted
	logf   func(string, ...any)
	rep    atomic.Pointer[replica.Replica] // nil until the replica is open
	// uploads are backups other replicas are sending this one to restore, when it leads.
	uploads uploads
}

func (b *backend) start(rep *replica.Replica) {
	rep.Transport().Handle(methodApply, b.handleApply)
	rep.Transport().Handle(methodRestoreChunk, b.handleRestoreChunk)
	rep.Transport().Handle(methodRestore, b.handleRestore)
	b.rep.Store(rep)
}

var errStarting = &api.Error{Status: 503, Code: api.CodeUnavailable, Message: "coord is starting: its replica has not joined the cluster yet"}

func (b *backend) replica() (*replica.Replica, error) {
	rep := b.rep.Load()
	if rep == nil {
		return nil, errStarting
	}
	return rep, nil
}

// Apply commits c through Raft, on the leader wherever it is, and returns its result once
// this replica has applied it too (so a read here next sees the write).
func (b *backend) Apply(ctx context.Context, c *fsm.Command) (*fsm.Result, error) {
	rep, err := b.replica()
	if err != nil {
		return nil, err
	}
	if err := b.writable(rep); err != nil {
		return nil, err
	}
	if c.IdemKey == "" {
		c.IdemKey = randomKey() // retries below are then safe: the FSM answers a repeat from memory
	}
	data, err := c.Encode()
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(10 * time.Second)
	if rep.IsLeader() { // the common case: the FSM here answered, so there is nothing to wait for
		if res, err := b.applyLocal(rep, data); err == nil {
			return res, nil
		}
	}
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	for {
		res, err := b.applyOnce(ctx, rep, data)
		if err == nil {
			return res, rep.WaitApplied(ctx, res.Index)
		}
		if ctx.Err() != nil {
			return nil, unavailable("write not confirmed within 10 s (%v); retrying it is safe with the same Idempotency-Key", err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(25 * time.Millisecond): // a leader change: try the new one
		}
	}
}

func (b *backend) applyOnce(ctx context.Context, rep *replica.Replica, data []byte) (*fsm.Result, error) {
	if rep.IsLeader() {
		return b.applyLocal(rep, data)
	}
	out, err := rep.Forward(ctx, methodApply, data)
	if err != nil {
		return nil, err
	}
	var res fsm.Result
	if err := json.Unmarshal(out, &res); err != nil {
		return nil, fmt.Errorf("leader's answer: %w", err)
	}
	return &res, nil
}

func (b *backend) applyLocal(rep *replica.Replica, data []byte) (*fsm.Result, error) {
	resp, err := rep.Apply(data, 5*time.Second)
	if err != nil {
		return nil, err
	}
	res, ok := resp.(*fsm.Result)
	if !ok {
		return nil, errors.New("apply: no result")
	}
	return res, nil
}

func (b *backend) handleApply(ctx context.Context, peer string, data []byte) ([]byte, error) {
	rep, err := b.replica()
	if err != nil {
		return nil, err
	}
	if !rep.IsLeader() {
		return nil, raft.ErrNotLeader
	}
	res, err := b.applyLocal(rep, data)
	if err != nil {
		return nil, err
	}
	return json.Marshal(res)
}

// writable refuses writes until the cluster has the expected number of voters.
func (b *backend) writable(rep *replica.Replica) error {
	if b.expect <= 1 {
		return nil
	}
	st, err := rep.Status()
	if err != nil {
		return err
	}
	if n := len(st.Members); n < b.expect {
		return unavailable("the cluster has %d of the %d replicas --bootstrap-expect asks for; start the others with --join", n, b.expect)
	}
	return nil
}

// Read returns the state once it satisfies the consistency asked for.
func (b *backend) Read(ctx context.Context, consistency string) (*fsm.Store, error) {
	rep, err := b.replica()
	if err != nil {
		return nil, err
	}
	if b.fsm.Unsupported() {
		return nil, unavailable("this replica met a command it does not understand and stopped; upgrade it, or read from another replica")
	}
	switch consistency {
	case api.Stale:
	case "", api.Default:
		if !rep.Fresh() {
			return nil, unavailable("this replica has not heard from a leader recently; use ?consistency=stale to read its state anyway")
		}
	case api.Linearizable:
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		if err := rep.Barrier(ctx); err != nil {
			return nil, unavailable("linearizable read: %v", err)
		}
	default:
		return nil, fmt.Errorf("consistency %q: use stale, default or linearizable", consistency)
	}
	return b.fsm.Store(), nil
}

func (b *backend) Status() (api.Cluster, error) {
	rep, err := b.replica()
	if err != nil {
		return api.Cluster{}, err
	}
	return rep.Status()
}

func (b *backend) RemoveMember(ctx context.Context, id string) error {
	rep, err := b.replica()
	if err != nil {
		return err
	}
	err = rep.RemoveMember(ctx, id)
	var nm replica.ErrNoMember
	var re *peer.RemoteError
	if errors.As(err, &nm) || errors.As(err, &re) && strings.HasPrefix(re.Msg, "no replica") {
		return &api.Error{Status: 404, Code: api.CodeNotFound, Message: err.Error()}
	}
	return err
}

func (b *backend) Admit(req api.JoinRequest) (*api.JoinResponse, error) {
	rep, err := b.replica()
	if err != nil {
		return nil, err
	}
	resp, err := rep.Admit(req)
	if errors.Is(err, replica.ErrBadToken) {
		return nil, &api.Error{Status: 401, Code: api.CodeUnauthorized, Message: err.Error()}
	}
	return resp, err
}

func (b *backend) JoinToken() (string, error) {
	rep, err := b.replica()
	if err != nil {
		return "", err
	}
	return rep.JoinToken(), nil
}

func (b *backend) Unsupported() bool { return b.fsm.Unsupported() }

// initCluster sets the cluster's IPv6 prefix once, retrying until a leader takes it or ctx
// ends. Every replica tries at start; the first write wins and the rest change nothing.
func (b *backend) initCluster(ctx context.Context, ula netip.Prefix) {
	for wait := 100 * time.Millisecond; ctx.Err() == nil; wait = min(2*wait, 5*time.Second) {
		rep := b.rep.Load()
		if rep.Barrier(ctx) == nil && b.fsm.Store().ULA().IsValid() {
			return
		}
		c, _ := fsm.NewCommand("cluster.init", "coord", "start", fsm.ClusterInit{ULA: ula.String()})
		if res, err := b.Apply(ctx, c); err == nil && res.Err == nil {
			return
		}
		select {
		case <-ctx.Done():
		case <-time.After(wait):
		}
	}
}

// createAdmin makes the user "admin" (if missing) and a new API key for it.
func (b *backend) createAdmin(ctx context.Context) (string, error) {
	if _, _, err := b.rep.Load().Leader(ctx); err != nil {
		return "", err
	}
	store := b.fsm.Store()
	u := store.UserByName("admin")
	if u == nil {
		c, _ := fsm.NewCommand("user.create", "coord", "bootstrap", fsm.User{ID: randomKey(), Name: "admin", Role: fsm.RoleAdmin})
		res, err := b.Apply(ctx, c)
		if err == nil {
			err = res.Decode(&u)
		}
		if err != nil {
			return "", err
		}
	}
	k := keys.New(keys.APIKey)
	c, _ := fsm.NewCommand("apikey.create", "coord", "bootstrap", fsm.APIKey{ID: k.ID, UserID: u.ID, Name: "bootstrap", Hash: k.Hash()})
	res, err := b.Apply(ctx, c)
	if err == nil {
		err = res.Decode(nil)
	}
	return k.String(), err
}

func unavailable(format string, args ...any) *api.Error {
	return &api.Error{Status: 503, Code: api.CodeUnavailable, Message: fmt.Sprintf(format, args...)}
}

func randomKey() string {
	b := make([]byte, 12)
	rand.Read(b)
	return hex.EncodeToString(b)
}
