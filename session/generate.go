package session

import (
	"fmt"
	"math/rand/v2"
	"strings"

	"github.com/erlmcp/migctl/term"
)

// Generate builds the term_to_binary blob of a realistic erlmcp session of
// 400 to 600 bytes, for tests and benchmarks. It is deterministic for a
// given rng state. A nil id gets an erlmcp-style id (32 upper-case hex
// characters from rng). The session was created up to a day before nowMs,
// was last accessed between then and nowMs, and has a timeout of 5, 30 or
// 60 minutes, or infinity (one session in ten); metadata has the binary
// keys an MCP server records (client, client_version, protocol_version,
// capabilities, transport, user, remote_ip, request_count, tags,
// user_agent). The bytes are exactly what term_to_binary/1 on OTP 25
// produces for the same map, so the VM and erlmcp read them as their own.
func Generate(rng *rand.Rand, id []byte, nowMs int64) []byte {
	if id == nil {
		const hex = "0123456789ABCDEF"
		id = make([]byte, 32)
		for i := range id {
			id[i] = hex[rng.IntN(16)]
		}
	}
	created := nowMs - rng.Int64N(24*3600*1000)
	last := created + rng.Int64N(nowMs-created+1)
	var timeout term.Term = []int64{300_000, 1_800_000, 1_800_000, 3_600_000}[rng.IntN(4)]
	if rng.IntN(10) == 0 {
		timeout = term.Atom("infinity")
	}
	target := 400 + rng.IntN(201)

	clients := []string{"claude-desktop", "cursor", "vscode-mcp", "zed", "mcp-inspector", "continue"}
	protocols := []string{"2024-11-05", "2025-03-26", "2025-06-18"}
	transports := []string{"stdio", "http", "sse", "websocket"}
	var caps []term.Term
	for _, c := range []string{"tools", "resources", "prompts", "sampling", "roots", "logging"} {
		if rng.IntN(3) != 0 {
			caps = append(caps, term.Binary(c))
		}
	}
	meta := term.Map{
		{Key: term.Binary("client"), Value: term.Binary(clients[rng.IntN(len(clients))])},
		{Key: term.Binary("client_version"), Value: term.Binary(fmt.Sprintf("%d.%d.%d", rng.IntN(3), rng.IntN(20), rng.IntN(10)))},
		{Key: term.Binary("protocol_version"), Value: term.Binary(protocols[rng.IntN(len(protocols))])},
		{Key: term.Binary("capabilities"), Value: list(caps)},
		{Key: term.Binary("transport"), Value: term.Atom(transports[rng.IntN(len(transports))])},
		// Optional entries, dropped from the end when the target size is small.
		{Key: term.Binary("user"), Value: term.Binary(fmt.Sprintf("user-%d", rng.IntN(100000)))},
		{Key: term.Binary("remote_ip"), Value: term.Binary(fmt.Sprintf("10.%d.%d.%d", rng.IntN(256), rng.IntN(256), rng.IntN(256)))},
		{Key: term.Binary("request_count"), Value: rng.Int64N(5000)},
		{Key: term.Binary("tags"), Value: term.Map{
			{Key: term.Binary("env"), Value: term.Binary([]string{"prod", "staging", "dev"}[rng.IntN(3)])},
			{Key: term.Binary("region"), Value: term.Binary([]string{"eu-west-1", "us-east-1", "ap-south-1"}[rng.IntN(3)])},
		}},
	}
	const required = 5
	build := func(meta term.Map, ua string) []byte {
		m := append(meta[:len(meta):len(meta)], term.MapPair{Key: term.Binary("user_agent"), Value: term.Binary(ua)})
		b, err := term.Encode(term.Map{
			{Key: term.Atom("id"), Value: term.Binary(id)},
			{Key: term.Atom("created_at"), Value: created},
			{Key: term.Atom("last_accessed"), Value: last},
			{Key: term.Atom("timeout_ms"), Value: timeout},
			{Key: term.Atom("metadata"), Value: m},
		})
		if err != nil {
			panic("session.Generate: " + err.Error()) // only plain terms above; cannot happen
		}
		return b
	}
	// The user agent pads the blob to the target size: a binary's encoding
	// grows one byte per byte, so the padding is exact.
	const minUA = 16
	base := build(meta, "")
	for len(base)+minUA > target && len(meta) > required {
		meta = meta[:len(meta)-1]
		base = build(meta, "")
	}
	pad := max(target-len(base), 0)
	return build(meta, userAgent(rng, pad))
}

func list(elems []term.Term) term.Term {
	if len(elems) == 0 {
		return term.Nil{}
	}
	return term.List{Elems: elems}
}

// userAgent returns a plausible User-Agent of exactly n bytes.
func userAgent(rng *rand.Rand, n int) string {
	agents := []string{
		"Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/537.36 (KHTML, like Gecko) Claude/0.7.1 Chrome/128.0 Electron/32.1 Safari/537.36 ",
		"Mozilla/5.0 (X11; Linux x86_64) mcp-client/1.4.2 node/22.3.0 undici/6.19 ",
		"Mozilla/5.0 (Windows NT 10.0; Win64; x64) Cursor/0.42.3 Chrome/124.0 Electron/30.4 ",
		"python-httpx/0.27.2 mcp/1.2.0 (+https://modelcontextprotocol.io) ",
	}
	a := agents[rng.IntN(len(agents))]
	return strings.Repeat(a, n/len(a)+1)[:n]
}
