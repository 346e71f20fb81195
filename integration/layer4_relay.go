package integration

import (
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"sync"
	"syscall"
	"time"

	"github.com/mholt/caddy-l4/layer4"

	"github.com/caddy-targetgroup/caddy-targetgroup/targetgroup"
)

// Datagram buffers: caddy-l4 hands over client datagrams of at most 9000
// bytes; a target's reply may be as large as UDP allows.
const (
	maxClientDatagram = 9000
	maxTargetDatagram = 65535
)

// flow is one proxied connection or UDP flow. It is what the registry
// closes when the target's connections must end (connection termination),
// and what either relay direction shuts when it fails.
type flow struct {
	down   *layer4.Connection
	packet bool
	slot   *targetgroup.Flow // a UDP flow's place under max_udp_flows_per_group

	mu         sync.Mutex
	up         net.Conn // the raw socket to the target, once connected
	terminated bool     // closed by the registry
	shut       bool
}

// Close ends the flow on behalf of the registry (connection termination)
// or of a newer flow of the group at max_udp_flows_per_group. It only
// closes sockets, so that it is quick under the group's lock.
func (f *flow) Close() error {
	f.mu.Lock()
	f.terminated = true
	f.mu.Unlock()
	f.abort()
	return nil
}

func (f *flow) isShut() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.shut
}

func (f *flow) isTerminated() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.terminated
}

// attach records the connected target socket, unless the flow was
// terminated while it was being dialed.
func (f *flow) attach(up net.Conn) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.terminated {
		return false
	}
	f.up = up
	return true
}

// abort closes both sides at once, which ends both relay directions. A UDP
// flow's client side is caddy-l4's per-address view of the shared listening
// socket, which must not be closed from another goroutine than its reader:
// a read deadline in the past ends its reads instead, and caddy-l4 closes it
// when Handle returns.
func (f *flow) abort() {
	f.mu.Lock()
	up, already := f.up, f.shut
	f.shut = f.up != nil
	f.mu.Unlock()
	if up == nil || already {
		return
	}
	_ = up.Close()
	if f.packet {
		_ = f.down.SetReadDeadline(time.Unix(1, 0))
		return
	}
	_ = rawConn(f.down.Conn).Close()
}

// rawConn is the socket under a TLS connection; closing it does not wait
// to send a close_notify alert.
func rawConn(c net.Conn) net.Conn {
	for {
		u, ok := c.(interface{ NetConn() net.Conn })
		if !ok {
			return c
		}
		c = u.NetConn()
	}
}

type closeWriter interface{ CloseWrite() error }

// halfClose tells the peer that no more data comes (TCP FIN, TLS
// close_notify) while data may still arrive the other way.
func halfClose(c net.Conn) error {
	cw, ok := c.(closeWriter)
	if !ok {
		return fmt.Errorf("%T can't be half-closed", c)
	}
	return cw.CloseWrite()
}

// relayStream copies both ways until both are done. When one side finishes
// sending, the other is half-closed and the opposite direction goes on, so
// a response still arrives after the client half-closes. An error in
// either direction closes both sides.
func relayStream(f *flow, up net.Conn) (sent, received int64, err error) {
	down := f.down
	errc := make(chan error, 1)
	go func() {
		var err error
		// Bytes read ahead while matching routes come first; after that
		// the socket is read directly, so that TCP to TCP is spliced by the
		// kernel.
		if n := len(down.MatchingBytes()); n > 0 {
			buf := make([]byte, n)
			n, _ = io.ReadFull(down, buf)
			var m int
			m, err = up.Write(buf[:n])
			sent += int64(m)
		}
		if err == nil {
			var n int64
			n, err = io.Copy(up, down.Conn)
			sent += n
		}
		if err == nil {
			err = halfClose(up)
		}
		if err != nil {
			f.abort()
		}
		errc <- err
	}()
	received, err = io.Copy(down.Conn, up)
	if err == nil {
		err = halfClose(down.Conn)
	}
	if err != nil {
		f.abort()
	}
	upErr := <-errc
	return sent, received, errors.Join(err, upErr)
}

// relayPackets relays the datagrams of one UDP flow: one read of the
// client side is one datagram. The flow ends when the client side ends
// (caddy-l4's idle timeout) or the target socket fails. Every datagram,
// either way, marks the flow active for max_udp_flows_per_group.
func relayPackets(f *flow, up net.Conn, header []byte) (sent, received int64, err error) {
	down := f.down
	done := make(chan error, 1)
	go func() {
		r := newDatagramReader(up)
		var err error
		for {
			var p []byte
			p, err = r.next()
			if len(p) > 0 {
				f.slot.Touch()
				_, werr := down.Conn.Write(p)
				r.release()
				if werr != nil {
					err = werr
					break
				}
				received += int64(len(p))
			}
			if err != nil && !errors.Is(err, syscall.ECONNREFUSED) {
				break
			}
		}
		f.abort()
		done <- err
	}()
	// caddy-l4 hands datagrams over only to a read that holds the buffer
	// for them, so this one stays with the flow.
	buf := make([]byte, len(header)+maxClientDatagram)
	copy(buf, header)
	for {
		var n int
		n, err = down.Read(buf[len(header):])
		if n > 0 {
			f.slot.Touch()
			// ECONNREFUSED (an ICMP port unreachable from an earlier
			// datagram) loses that datagram only, as UDP would.
			if _, werr := up.Write(buf[:len(header)+n]); werr != nil && !errors.Is(werr, syscall.ECONNREFUSED) {
				err = werr
				break
			}
			sent += int64(n)
		}
		if err != nil {
			break
		}
	}
	if errors.Is(err, io.EOF) || f.isShut() {
		err = nil // idle timeout, or ended from the target side
	}
	f.abort()
	upErr := <-done
	if f.isTerminated() || errors.Is(upErr, net.ErrClosed) {
		upErr = nil
	}
	return sent, received, errors.Join(err, upErr)
}

// targetDatagrams are the buffers that datagrams from targets are read
// into: as large as a UDP datagram can be, and taken from the pool only
// once a datagram is waiting, so that the flows waiting for their
// target's next datagram (nearly all of them) hold none.
var targetDatagrams = sync.Pool{New: func() any {
	b := make([]byte, maxTargetDatagram)
	return &b
}}

// nonblockingReads: on these systems the runtime's sockets are
// non-blocking file descriptors that read(2) can be tried on once the
// poller says they are readable. Windows sockets are overlapped handles,
// which a plain read does not serve.
const nonblockingReads = runtime.GOOS != "windows" && runtime.GOOS != "plan9" && runtime.GOOS != "js" && runtime.GOOS != "wasip1"

// datagramReader reads the datagrams of a connected UDP socket. Where the
// runtime's poller can wait for the socket without a read in progress, no
// buffer is held while waiting; elsewhere the flow keeps one of its own.
type datagramReader struct {
	rc   syscall.RawConn
	held *[]byte // the pooled buffer of the last datagram, until release
	up   net.Conn
	own  []byte
}

func newDatagramReader(up net.Conn) *datagramReader {
	if sc, ok := up.(syscall.Conn); ok && nonblockingReads {
		if rc, err := sc.SyscallConn(); err == nil {
			return &datagramReader{rc: rc}
		}
	}
	return &datagramReader{up: up, own: make([]byte, maxTargetDatagram)}
}

// next waits for the next datagram and returns it; it stays valid until
// release.
func (r *datagramReader) next() ([]byte, error) {
	if r.rc == nil {
		n, err := r.up.Read(r.own)
		return r.own[:n], err
	}
	buf, n, err := readWhenReady(r.rc)
	if buf == nil {
		return nil, err
	}
	r.held = buf
	return (*buf)[:n], err
}

// release gives the last datagram's buffer back.
func (r *datagramReader) release() {
	if r.held != nil {
		targetDatagrams.Put(r.held)
		r.held = nil
	}
}

// readWhenReady reads one datagram into a pooled buffer. RawConn.Read
// calls the function again each time the poller reports the socket
// readable, until it reports done; a read that would block gives its
// buffer back first. Closing the socket ends the wait with net.ErrClosed.
func readWhenReady(rc syscall.RawConn) (*[]byte, int, error) {
	var (
		buf  *[]byte
		n    int
		rerr error
	)
	err := rc.Read(func(fd uintptr) bool {
		buf = targetDatagrams.Get().(*[]byte)
		for {
			n, rerr = sysRead(syscall.Read, fd, *buf)
			if rerr != syscall.EINTR {
				break
			}
		}
		if rerr == syscall.EAGAIN || rerr == syscall.EWOULDBLOCK {
			targetDatagrams.Put(buf)
			buf = nil
			return false
		}
		return true
	})
	if err == nil {
		err = rerr
	}
	if err != nil || n <= 0 {
		if buf != nil {
			targetDatagrams.Put(buf)
		}
		return nil, 0, err
	}
	return buf, n, nil
}

// sysRead is syscall.Read with the descriptor converted to the type the
// platform's syscall.Read takes (inferred from it), so that this file
// builds on every platform; it is only called where nonblockingReads.
func sysRead[FD ~int | ~uintptr](read func(FD, []byte) (int, error), fd uintptr, p []byte) (int, error) {
	return read(FD(fd), p)
}
