package erl

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/ergo-services/ergo/etf"
	"github.com/ergo-services/ergo/node"
)

// DefaultEPMDPort is the port EPMD listens on unless ERL_EPMD_PORT says otherwise.
const DefaultEPMDPort = 4369

// SplitNode splits name@host, rejecting anything else.
func SplitNode(n string) (name, host string, err error) {
	i := strings.IndexByte(n, '@')
	if i <= 0 || i == len(n)-1 || strings.Count(n, "@") != 1 {
		return "", "", &Error{Op: "parse", Node: n, Err: ErrBadNodeName, Hint: "node names look like erlmcp1@host"}
	}
	return n[:i], n[i+1:], nil
}

// epmd is a client of the EPMD protocol: it asks a host which port a node
// listens on. It never registers anything: migctl connects out only, so it
// needs no EPMD entry of its own and must not start an EPMD server.
type epmd struct {
	port    int
	timeout time.Duration
}

func (e epmd) dial(ctx context.Context, host string) (net.Conn, error) {
	d := net.Dialer{Timeout: e.timeout}
	c, err := d.DialContext(ctx, "tcp", net.JoinHostPort(host, strconv.Itoa(e.port)))
	if err != nil {
		return nil, err
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	} else {
		_ = c.SetDeadline(time.Now().Add(e.timeout))
	}
	return c, nil
}

// portPlease returns the distribution port of name on host (PORT_PLEASE2_REQ).
func (e epmd) portPlease(ctx context.Context, name, host string) (int, error) {
	c, err := e.dial(ctx, host)
	if err != nil {
		return 0, fmt.Errorf("%w: %v", ErrEPMDUnreachable, err)
	}
	defer c.Close()
	req := make([]byte, 3+len(name))
	binary.BigEndian.PutUint16(req, uint16(1+len(name)))
	req[2] = 122
	copy(req[3:], name)
	if _, err := c.Write(req); err != nil {
		return 0, fmt.Errorf("%w: %v", ErrEPMDUnreachable, err)
	}
	hdr := make([]byte, 2)
	if _, err := io.ReadFull(c, hdr); err != nil {
		return 0, fmt.Errorf("%w: short reply: %v", ErrEPMDUnreachable, err)
	}
	if hdr[0] != 119 {
		return 0, fmt.Errorf("%w: unexpected reply %d", ErrEPMDUnreachable, hdr[0])
	}
	if hdr[1] != 0 {
		return 0, ErrNotRegistered
	}
	rest := make([]byte, 2)
	if _, err := io.ReadFull(c, rest); err != nil {
		return 0, fmt.Errorf("%w: short reply: %v", ErrEPMDUnreachable, err)
	}
	return int(binary.BigEndian.Uint16(rest)), nil
}

// names lists the node names registered with EPMD on host (NAMES_REQ); used
// only to make "not registered" errors helpful.
func (e epmd) names(ctx context.Context, host string) ([]string, error) {
	c, err := e.dial(ctx, host)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	if _, err := c.Write([]byte{0, 1, 110}); err != nil {
		return nil, err
	}
	if _, err := io.ReadFull(c, make([]byte, 4)); err != nil {
		return nil, err
	}
	var out []string
	sc := bufio.NewScanner(c)
	for sc.Scan() {
		// "name foo at port 1234"
		f := strings.Fields(sc.Text())
		if len(f) >= 2 && f[0] == "name" {
			out = append(out, f[1])
		}
	}
	return out, nil
}

// registrar implements ergo's node.Registrar: it resolves and never registers.
type registrar struct {
	epmd epmd
}

var _ node.Registrar = (*registrar)(nil)

func (r *registrar) Register(context.Context, string, node.RegisterOptions) error { return nil }
func (r *registrar) RegisterProxy(string, int, node.ProxyFlags) error             { return nil }
func (r *registrar) UnregisterProxy(string) error                                 { return nil }
func (r *registrar) ResolveProxy(string) (node.ProxyRoute, error) {
	return node.ProxyRoute{}, errors.New("proxy routes are not used by migctl")
}
func (r *registrar) Config() (node.RegistrarConfig, error) {
	return node.RegistrarConfig{}, errors.New("no registrar config")
}
func (r *registrar) ConfigItem(string) (etf.Term, error) {
	return nil, errors.New("no registrar config")
}
func (r *registrar) SetConfigUpdateCallback(func(string, etf.Term) error) error {
	return nil
}

func (r *registrar) Resolve(peer string) (node.Route, error) {
	name, host, err := SplitNode(peer)
	if err != nil {
		return node.Route{}, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), r.epmd.timeout)
	defer cancel()
	port, err := r.epmd.portPlease(ctx, name, host)
	if err != nil {
		return node.Route{}, err
	}
	return node.Route{Node: peer, Host: host, Port: uint16(port)}, nil
}
