package erl

import (
	"net"
	"sync"

	"github.com/ergo-services/ergo/lib"
	"github.com/ergo-services/ergo/node"
)

// hiddenHandshake wraps ergo's handshake (version 6) for two reasons:
//
//  1. ergo always announces itself as a published node. We clear the
//     "published" distribution flag in the name message we send, so the
//     Erlang side treats migctl as hidden (nodes(hidden)), keeps it out of
//     global's name synchronisation, and never counts it as a cluster member.
//  2. ergo reports every handshake failure as "no route to node". We record
//     how far each handshake got so that a wrong cookie (the peer closes the
//     connection right after our challenge reply) can be told apart from a
//     node that is not there.
type hiddenHandshake struct {
	node.HandshakeInterface

	mu     sync.Mutex
	stages map[string]hsStage // by remote address
}

type hsStage int

const (
	hsNone       hsStage = iota
	hsNameSent           // we sent our name
	hsReplySent          // we answered the challenge with our digest
	hsHandshaked         // done
)

func (h *hiddenHandshake) Start(remote net.Addr, conn lib.NetReadWriter, tls bool, cookie string) (node.HandshakeDetails, error) {
	w := &hsConn{NetReadWriter: conn, h: h, addr: remote.String()}
	h.set(w.addr, hsNone)
	d, err := h.HandshakeInterface.Start(remote, w, tls, cookie)
	if err == nil {
		h.set(w.addr, hsHandshaked)
	}
	return d, err
}

func (h *hiddenHandshake) set(addr string, s hsStage) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.stages == nil {
		h.stages = map[string]hsStage{}
	}
	h.stages[addr] = s
}

// stage reports how far the last handshake with addr got.
func (h *hiddenHandshake) stage(addr string) hsStage {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.stages[addr]
}

type hsConn struct {
	lib.NetReadWriter
	h      *hiddenHandshake
	addr   string
	writes int
}

// Write patches the first message (the name message 'N': 2-byte length,
// 'N', 8-byte flags, ...) to clear the published bit (0x1, the lowest bit of
// the last flag byte), and notes the challenge reply ('r').
func (c *hsConn) Write(b []byte) (int, error) {
	c.writes++
	if len(b) >= 11 && b[2] == 'N' {
		p := make([]byte, len(b))
		copy(p, b)
		p[10] &^= 0x01
		c.h.set(c.addr, hsNameSent)
		return c.NetReadWriter.Write(p)
	}
	if len(b) >= 3 && b[2] == 'r' {
		c.h.set(c.addr, hsReplySent)
	}
	return c.NetReadWriter.Write(b)
}
