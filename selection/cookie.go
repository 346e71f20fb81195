package selection

// The lb_cookie codec. ALB's AWSALB cookie names the target, is "encrypted
// using a rotating key", cannot be decrypted or modified by the client, and
// one cookie name serves every target group; so the value is an AEAD
// ciphertext under a key ring, bound to its group.
//
// Value: base64url without padding (RFC 4648 §5; only A–Z a–z 0–9 - _, all
// valid cookie octets, so nothing is URL-encoded, which ALB does not
// support) of
//
//	version   1 byte, cookieVersion
//	key id    uvarint (1 byte for ids below 128)
//	group tag 4 bytes, FNV-1a 32 of the group name, big endian
//	nonce     24 random bytes
//	sealed    XChaCha20-Poly1305(plaintext), 16-byte tag included
//
// with additional data = version | key id | group tag | group name, and
//
//	plaintext = uvarint(expiry, Unix seconds) | uvarint(port) | target id
//
// The group name is authenticated but not carried: a cookie of one group
// fails authentication on any other. The tag only lets Open tell "another
// group's cookie" (normal when groups share the AWSALB name) from tampering
// without spending a decryption on it; it is not a secret and not a check.
//
// Length: 51 bytes (with key ids below 128 and the expiry's varint at 5
// bytes, true until 2106) plus the port's varint (1–3 bytes) and the target
// id, times 4/3: 96 characters for an instance (i-0123456789abcdef0, port
// 8080), 82 for an IPv4 target (10.0.1.23, port 80).
//
// Why XChaCha20-Poly1305 rather than AES-256-GCM: like ALB, the caller
// re-seals the cookie on every response (to slide its expiry), so a busy
// key seals billions of values before it rotates. With GCM's 96-bit random
// nonces, 2^32 seals per key is the NIST limit and a repeated nonce gives
// away the authentication key; XChaCha's 192-bit nonces make random nonces
// safe for any count, for 12 more bytes (16 characters). It is not
// available under GODEBUG=fips140=only, where NewKeyring fails.

import (
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"time"

	"golang.org/x/crypto/chacha20poly1305"
)

const (
	cookieVersion = 1
	tagSize       = 4
	nonceSize     = chacha20poly1305.NonceSizeX
	// MaxStickyID bounds the target id a cookie carries, keeping the value
	// well under the 4 KB browsers allow a cookie.
	MaxStickyID = 512
	// maxValue bounds the input Open decodes, so a hostile cookie header
	// costs no more than a real one.
	maxValue = (1 + binary.MaxVarintLen32 + tagSize + nonceSize + 2*binary.MaxVarintLen64 + MaxStickyID + chacha20poly1305.Overhead) * 4 / 3
)

// cookieEncoding is strict so that the unused low bits of the last
// character must be zero: otherwise four spellings decode alike.
var cookieEncoding = base64.RawURLEncoding.Strict()

// Errors of Open. Callers treat them all the same way ALB does (pick a new
// target and rewrite the cookie); they differ for metrics and logs.
var (
	ErrMalformed  = errors.New("sticky cookie: malformed")
	ErrUnknownKey = errors.New("sticky cookie: unknown key")
	ErrTampered   = errors.New("sticky cookie: authentication failed")
	ErrOtherGroup = errors.New("sticky cookie: issued for another target group")
	ErrExpired    = errors.New("sticky cookie: expired")
)

// Key is one key of a Keyring. ID goes into every cookie so that Open finds
// the key without trying them all; Created orders keys for sealing and
// rotation.
type Key struct {
	ID      uint32
	Secret  [32]byte
	Created time.Time
}

// String leaves the secret out, so that logging a key cannot leak it.
func (k Key) String() string {
	return fmt.Sprintf("key %d created %s", k.ID, k.Created.UTC().Format(time.RFC3339))
}

// GoString leaves the secret out of %#v as well.
func (k Key) GoString() string { return "selection.Key{" + k.String() + "}" }

// NewKey returns a key with a fresh secret from crypto/rand.
func NewKey(id uint32, now time.Time) (Key, error) {
	k := Key{ID: id, Created: now}
	if _, err := rand.Read(k.Secret[:]); err != nil {
		return Key{}, err
	}
	return k, nil
}

// Keyring seals with its newest key and opens with any of its keys. It is
// immutable, so the request path reads it without locks; rotation builds a
// new one (see Rotate).
type Keyring struct {
	sealer ringKey
	keys   []ringKey // a few keys: a scan beats a map
}

type ringKey struct {
	id   uint32
	aead cipher.AEAD
}

// NewKeyring builds a key ring. The key with the latest Created (the highest
// ID among equals) seals; every key opens, so the caller keeps a retired key
// for at least the longest cookie lifetime after its successor took over.
func NewKeyring(keys []Key) (*Keyring, error) { return NewKeyringAt(keys, time.Time{}, 0) }

// NewKeyringAt builds a key ring that seals with the newest key created at
// least activation before now, or with the oldest key when none is that
// old: nodes sharing the ring each load a new key before any of them seals
// with it, so every node opens every cookie.
func NewKeyringAt(keys []Key, now time.Time, activation time.Duration) (*Keyring, error) {
	if len(keys) == 0 {
		return nil, errors.New("keyring: no keys")
	}
	kr := &Keyring{keys: make([]ringKey, 0, len(keys))}
	newest, oldest := -1, -1
	for i, k := range keys {
		for _, o := range kr.keys {
			if o.id == k.ID {
				return nil, fmt.Errorf("keyring: duplicate key id %d", k.ID)
			}
		}
		aead, err := chacha20poly1305.NewX(k.Secret[:])
		if err != nil {
			return nil, fmt.Errorf("keyring: %w", err)
		}
		kr.keys = append(kr.keys, ringKey{k.ID, aead})
		if oldest < 0 || newer(keys[oldest], k) {
			oldest = i
		}
		if activation > 0 && now.Sub(k.Created) < activation {
			continue
		}
		if newest < 0 || newer(k, keys[newest]) {
			newest = i
		}
	}
	if newest < 0 {
		newest = oldest
	}
	kr.sealer = kr.keys[newest]
	return kr, nil
}

func newer(a, b Key) bool {
	if !a.Created.Equal(b.Created) {
		return a.Created.After(b.Created)
	}
	return a.ID > b.ID
}

// SealingKey is the id of the key that Seal uses.
func (kr *Keyring) SealingKey() uint32 { return kr.sealer.id }

// Sticky is what an lb_cookie says: the request goes to target ID on Port
// in Group until Expires. Expires has a resolution of one second, that of
// the cookie's own Expires attribute.
type Sticky struct {
	Group   string
	ID      string
	Port    int
	Expires time.Time
}

// groupTag is FNV-1a 32, inlined so that Open costs no allocation for it.
func groupTag(group string) uint32 {
	h := uint32(2166136261)
	for i := 0; i < len(group); i++ {
		h ^= uint32(group[i])
		h *= 16777619
	}
	return h
}

func header(dst []byte, id uint32, group string) []byte {
	dst = append(dst, cookieVersion)
	dst = binary.AppendUvarint(dst, uint64(id))
	return binary.BigEndian.AppendUint32(dst, groupTag(group))
}

// Seal returns the cookie value for s under the newest key.
func (kr *Keyring) Seal(s Sticky) (string, error) {
	if len(s.ID) > MaxStickyID {
		return "", fmt.Errorf("sticky cookie: target id longer than %d bytes", MaxStickyID)
	}
	if s.Port < 0 || s.Port > math.MaxUint16 {
		return "", fmt.Errorf("sticky cookie: port %d out of range", s.Port)
	}
	exp := s.Expires.Unix()
	if exp <= 0 {
		return "", errors.New("sticky cookie: expiry before 1970")
	}
	// One buffer holds the header, the nonce, then the ciphertext sealed
	// in place after the plaintext written where it will land, and the
	// additional data after all that, so Seal allocates it once.
	hdrMax := 1 + binary.MaxVarintLen32 + tagSize
	ptMax := 2*binary.MaxVarintLen64 + len(s.ID)
	buf := make([]byte, 0, hdrMax+nonceSize+ptMax+chacha20poly1305.Overhead+hdrMax+len(s.Group))
	buf = header(buf, kr.sealer.id, s.Group)
	hdrLen := len(buf)
	buf = buf[:hdrLen+nonceSize]
	nonce := buf[hdrLen:]
	if _, err := rand.Read(nonce); err != nil {
		return "", err
	}
	pt := binary.AppendUvarint(buf[len(buf):], uint64(exp))
	pt = binary.AppendUvarint(pt, uint64(s.Port))
	pt = append(pt, s.ID...)
	// The additional data goes past the end of the ciphertext, in the
	// buffer's spare capacity.
	adStart := len(buf) + len(pt) + chacha20poly1305.Overhead
	ad := append(buf[adStart:adStart], buf[:hdrLen]...)
	ad = append(ad, s.Group...)
	sealed := kr.sealer.aead.Seal(pt[:0], nonce, pt, ad)
	raw := buf[:len(buf)+len(sealed)]
	return cookieEncoding.EncodeToString(raw), nil
}

// Open returns what value says if it is a cookie of this key ring for group
// and has not expired at now; otherwise one of ErrMalformed, ErrUnknownKey,
// ErrOtherGroup, ErrTampered, ErrExpired. It never panics, whatever value
// holds: the cookie header is client input.
func (kr *Keyring) Open(value string, group string, now time.Time) (Sticky, error) {
	if len(value) > maxValue {
		return Sticky{}, ErrMalformed
	}
	// The decoder skips CR and LF even in strict mode; refusing anything
	// outside the alphabet leaves each cookie exactly one spelling.
	for i := 0; i < len(value); i++ {
		if c := value[i]; !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return Sticky{}, ErrMalformed
		}
	}
	// One buffer: the decoded value, then the additional data in its
	// spare capacity.
	size := cookieEncoding.DecodedLen(len(value))
	buf := make([]byte, size, size+1+binary.MaxVarintLen32+tagSize+len(group))
	m, err := cookieEncoding.Decode(buf, []byte(value))
	raw := buf[:m]
	if err != nil || len(raw) < 1+1+tagSize+nonceSize+chacha20poly1305.Overhead || raw[0] != cookieVersion {
		return Sticky{}, ErrMalformed
	}
	id, n := binary.Uvarint(raw[1:])
	if n <= 0 || id > math.MaxUint32 || len(raw) < 1+n+tagSize+nonceSize+chacha20poly1305.Overhead {
		return Sticky{}, ErrMalformed
	}
	hdrLen := 1 + n + tagSize
	var aead cipher.AEAD
	for _, k := range kr.keys {
		if uint64(k.id) == id {
			aead = k.aead
			break
		}
	}
	if aead == nil {
		return Sticky{}, ErrUnknownKey
	}
	if binary.BigEndian.Uint32(raw[1+n:]) != groupTag(group) {
		return Sticky{}, ErrOtherGroup
	}
	// The header as received is authenticated, so a second spelling of
	// it (a non-minimal varint) fails like any other change.
	ad := append(raw[len(raw):len(raw)], raw[:hdrLen]...)
	ad = append(ad, group...)
	nonce := raw[hdrLen : hdrLen+nonceSize]
	ct := raw[hdrLen+nonceSize:]
	pt, err := aead.Open(ct[:0], nonce, ct, ad)
	if err != nil {
		return Sticky{}, ErrTampered
	}
	// What follows was sealed by a key of ours, so it is well formed
	// unless that key leaked; the checks are for that case.
	exp, n := binary.Uvarint(pt)
	if n <= 0 || exp > math.MaxInt64 {
		return Sticky{}, ErrMalformed
	}
	pt = pt[n:]
	port, n := binary.Uvarint(pt)
	if n <= 0 || port > math.MaxUint16 {
		return Sticky{}, ErrMalformed
	}
	s := Sticky{Group: group, Port: int(port), Expires: time.Unix(int64(exp), 0)}
	if !now.Before(s.Expires) {
		return Sticky{}, ErrExpired
	}
	s.ID = string(pt[n:])
	return s, nil
}

// Rotate returns keys with a new key added when the newest is period old
// (or there is none), and without the keys that were superseded more than
// keep ago; changed says whether anything was added or dropped. keys is not
// modified. The result is sorted oldest first.
//
// A key is dropped by the age of its successor, not its own: a key seals
// until its successor is created, so its last cookies live until then plus
// their lifetime. keep is therefore simply the longest cookie lifetime (plus
// the time other nodes take to load a new key ring), whatever period is and
// however late rotation runs. The newest key is never dropped.
func Rotate(keys []Key, now time.Time, period, keep time.Duration) (out []Key, changed bool, err error) {
	if period <= 0 || keep <= 0 {
		return nil, false, errors.New("key rotation: period and keep must be positive")
	}
	out = slices.Clone(keys)
	slices.SortFunc(out, func(a, b Key) int {
		if newer(a, b) {
			return 1
		}
		if newer(b, a) {
			return -1
		}
		return 0
	})
	if len(out) == 0 || now.Sub(out[len(out)-1].Created) >= period {
		var maxID uint32
		for _, k := range out {
			maxID = max(maxID, k.ID)
		}
		if len(out) > 0 && maxID == math.MaxUint32 {
			return nil, false, errors.New("key rotation: key ids exhausted")
		}
		id := maxID + 1
		k, err := NewKey(id, now)
		if err != nil {
			return nil, false, err
		}
		out, changed = append(out, k), true
	}
	kept := out[:0]
	for i, k := range out {
		if i+1 < len(out) && now.Sub(out[i+1].Created) > keep {
			changed = true
			continue
		}
		kept = append(kept, k)
	}
	return kept, changed, nil
}

type storedKeys struct {
	Keys []storedKey `json:"keys"`
}

type storedKey struct {
	ID      uint32    `json:"id"`
	Secret  []byte    `json:"secret"` // encoding/json writes []byte as standard base64
	Created time.Time `json:"created"`
}

// MarshalKeys encodes keys for storage as {"keys":[{"id","secret","created"}]},
// secrets in standard base64. The output is secret: store it as such.
func MarshalKeys(keys []Key) ([]byte, error) {
	s := storedKeys{Keys: make([]storedKey, len(keys))}
	for i, k := range keys {
		s.Keys[i] = storedKey{ID: k.ID, Secret: k.Secret[:], Created: k.Created}
	}
	return json.Marshal(s)
}

// UnmarshalKeys decodes what MarshalKeys wrote, refusing secrets that are
// not 32 bytes and duplicate ids, which would make a key ring ambiguous.
func UnmarshalKeys(data []byte) ([]Key, error) {
	var s storedKeys
	if err := json.Unmarshal(data, &s); err != nil {
		return nil, fmt.Errorf("stored keys: %w", err)
	}
	out := make([]Key, len(s.Keys))
	seen := make(map[uint32]bool, len(s.Keys))
	for i, k := range s.Keys {
		if len(k.Secret) != len(out[i].Secret) {
			return nil, fmt.Errorf("stored keys: key %d: secret is %d bytes, want %d", k.ID, len(k.Secret), len(out[i].Secret))
		}
		if seen[k.ID] {
			return nil, fmt.Errorf("stored keys: duplicate key id %d", k.ID)
		}
		seen[k.ID] = true
		out[i] = Key{ID: k.ID, Created: k.Created}
		copy(out[i].Secret[:], k.Secret)
	}
	return out, nil
}
