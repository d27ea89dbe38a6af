package fsm

import "strings"

// Online is the payload of node.online: a replica's word that node ID opened its first map
// stream there (Online) or closed its last. Stream names the replica and its boot
// ("c1/3f9a…"), so a replica that restarted can tell its old streams from its new ones.
type Online struct {
	ID     string `json:"id"`
	Stream string `json:"stream"`
	Online bool   `json:"online"`
}

func nodeOnline(t *tx) (any, string, error) {
	var req Online
	if err := t.decode(&req); err != nil {
		return nil, "", err
	}
	if err := checkLen("a stream name", req.Stream, maxKeyText); err != nil {
		return nil, "", err
	}
	old := get[Node](t, tNodes, "id", req.ID)
	if old == nil {
		return nil, "", errorf(CodeNotFound, "no node with ID %q", req.ID)
	}
	// A close from a replica the node has left since (it streams elsewhere now) changes nothing.
	if !req.Online && old.Stream != req.Stream {
		return old, "node/" + old.Name, nil
	}
	n := *old
	n.Online, n.LastSeen = req.Online, t.c.Time
	n.Stream = req.Stream
	if !req.Online {
		n.Stream = ""
	}
	t.put(tNodes, &n)
	return &n, "node/" + n.Name, nil
}

// StreamsEnded is the payload of node.streams-ended: replica Replica started anew as boot
// Stream, so the nodes it marked online in an earlier boot are not streaming there.
type StreamsEnded struct {
	Replica string `json:"replica"`
	Stream  string `json:"stream"`
}

func nodeStreamsEnded(t *tx) (any, string, error) {
	var req StreamsEnded
	if err := t.decode(&req); err != nil {
		return nil, "", err
	}
	for _, old := range all[Node](t.Txn, tNodes, "id") {
		replica, _, _ := strings.Cut(old.Stream, "/")
		if old.Online && replica == req.Replica && old.Stream != req.Stream {
			n := *old
			n.Online, n.Stream = false, ""
			t.put(tNodes, &n)
		}
	}
	return nil, "cluster/" + req.Replica, nil
}
