package vm

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"
)

// qmpClient speaks QMP (qemu's JSON monitor) over qemu's stdin and stdout: commands
// with an id each, answered in any order, and the asynchronous events (DEVICE_DELETED
// tells that the guest let a hot-plugged device go).
type qmpClient struct {
	w  io.WriteCloser
	mu sync.Mutex // serializes writes and guards the fields below
	// pending are the commands waiting for their answer, by id.
	pending map[string]chan qmpMessage
	next    int
	// events holds every event received so far; changed is closed and replaced
	// whenever one arrives or the connection ends.
	events  []qmpMessage
	changed chan struct{}
	closed  error
	ready   chan struct{} // closed once qmp_capabilities has been answered
}

type qmpMessage struct {
	ID     string          `json:"id,omitempty"`
	Return json.RawMessage `json:"return,omitempty"`
	Error  *struct {
		Class string `json:"class"`
		Desc  string `json:"desc"`
	} `json:"error,omitempty"`
	Event string          `json:"event,omitempty"`
	Data  json.RawMessage `json:"data,omitempty"`
	QMP   json.RawMessage `json:"QMP,omitempty"`
}

// newQMP starts reading r (qemu's stdout, closed when qemu closes it) and negotiates capabilities in the
// background; commands wait for that.
func newQMP(w io.WriteCloser, r io.Reader) *qmpClient {
	q := &qmpClient{w: w, pending: map[string]chan qmpMessage{}, changed: make(chan struct{}), ready: make(chan struct{})}
	go q.read(r)
	go func() {
		if _, err := q.exec(context.Background(), "qmp_capabilities", nil); err == nil {
			close(q.ready)
		}
	}()
	return q
}

func (q *qmpClient) read(r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		var m qmpMessage
		if json.Unmarshal(sc.Bytes(), &m) != nil {
			continue
		}
		q.mu.Lock()
		switch {
		case m.ID != "":
			if ch := q.pending[m.ID]; ch != nil {
				ch <- m
				delete(q.pending, m.ID)
			}
		case m.Event != "":
			q.events = append(q.events, m)
			close(q.changed)
			q.changed = make(chan struct{})
		}
		q.mu.Unlock()
	}
	if c, ok := r.(io.Closer); ok {
		c.Close()
	}
	q.mu.Lock()
	q.closed = errors.New("qemu's QMP monitor closed (qemu exited)")
	for id, ch := range q.pending {
		close(ch)
		delete(q.pending, id)
	}
	close(q.changed)
	q.changed = make(chan struct{})
	q.mu.Unlock()
}

// Exec runs one command and returns its answer; a QMP error becomes an error naming
// the command.
func (q *qmpClient) Exec(ctx context.Context, cmd string, args any) (json.RawMessage, error) {
	select {
	case <-q.ready:
	case <-ctx.Done():
		return nil, fmt.Errorf("QMP %s: the monitor never became ready: %w", cmd, ctx.Err())
	}
	return q.exec(ctx, cmd, args)
}

func (q *qmpClient) exec(ctx context.Context, cmd string, args any) (json.RawMessage, error) {
	q.mu.Lock()
	if q.closed != nil {
		q.mu.Unlock()
		return nil, fmt.Errorf("QMP %s: %w", cmd, q.closed)
	}
	q.next++
	id := fmt.Sprintf("c%d", q.next)
	ch := make(chan qmpMessage, 1)
	q.pending[id] = ch
	req := map[string]any{"execute": cmd, "id": id}
	if args != nil {
		req["arguments"] = args
	}
	b, err := json.Marshal(req)
	if err == nil {
		_, err = q.w.Write(append(b, '\n'))
	}
	q.mu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("QMP %s: writing to qemu: %w", cmd, err)
	}
	select {
	case m, ok := <-ch:
		if !ok {
			return nil, fmt.Errorf("QMP %s: qemu exited before answering", cmd)
		}
		if m.Error != nil {
			return nil, fmt.Errorf("QMP %s: %s: %s", cmd, m.Error.Class, m.Error.Desc)
		}
		return m.Return, nil
	case <-ctx.Done():
		q.mu.Lock()
		delete(q.pending, id)
		q.mu.Unlock()
		return nil, fmt.Errorf("QMP %s: no answer: %w", cmd, ctx.Err())
	}
}

// Send writes a command without waiting for the monitor to be ready or for the
// answer (quit, system_powerdown at termination).
func (q *qmpClient) Send(cmd string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	fmt.Fprintf(q.w, `{"execute":%q}`+"\n", cmd)
}

// WaitEvent waits for an event named name whose data satisfies match, among the
// events received since index from (see EventCount).
func (q *qmpClient) WaitEvent(ctx context.Context, from int, name string, match func(json.RawMessage) bool) error {
	for {
		q.mu.Lock()
		for _, e := range q.events[min(from, len(q.events)):] {
			if e.Event == name && (match == nil || match(e.Data)) {
				q.mu.Unlock()
				return nil
			}
		}
		from = len(q.events)
		closed, ch := q.closed, q.changed
		q.mu.Unlock()
		if closed != nil {
			return fmt.Errorf("waiting for %s: %w", name, closed)
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("waiting for qemu's %s event: %w", name, ctx.Err())
		}
	}
}

// EventCount is how many events have arrived: WaitEvent(from = EventCount() taken
// before the command) sees only the command's own events.
func (q *qmpClient) EventCount() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.events)
}

// Close closes qemu's stdin.
func (q *qmpClient) Close() error { return q.w.Close() }
