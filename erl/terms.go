package erl

import "github.com/ergo-services/ergo/etf"

// Int64 reads an integer term as ergo decodes it (int, int64, or a smaller
// Go integer type for small values); anything else is 0.
func Int64(t Term) int64 {
	switch v := t.(type) {
	case int:
		return int64(v)
	case int64:
		return v
	case int32:
		return int64(v)
	case int16:
		return int64(v)
	case int8:
		return int64(v)
	case uint64:
		return int64(v)
	case uint32:
		return int64(v)
	case uint16:
		return int64(v)
	case uint8:
		return int64(v)
	case float64:
		return int64(v)
	}
	return 0
}

// Bytes reads a binary (or a charlist, which ergo decodes as a Go string,
// or an atom) as bytes; anything else is nil.
func Bytes(t Term) []byte {
	switch v := t.(type) {
	case []byte:
		return v
	case string:
		return []byte(v)
	case etf.Atom:
		return []byte(v)
	}
	return nil
}
