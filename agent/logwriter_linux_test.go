package agent

import (
	"fmt"
	"reflect"
	"testing"
)

// TestLogWriterLines: a line the imaging log writes in several pieces (as
// bundle/volume's "imaging ... into ...: N MiB, gpt partition 1 at sector S" is) is one
// log event, several lines in one write are several, and a last line without a newline
// comes out on flush.
func TestLogWriterLines(t *testing.T) {
	var got []string
	l := &logWriter{logf: func(f string, a ...any) { got = append(got, fmt.Sprintf(f, a...)) }}
	fmt.Fprintf(l, "imaging / into /tmp/x: %d MiB", 2048)
	fmt.Fprintf(l, ", gpt partition %d at sector %d", 1, 262144)
	fmt.Fprintln(l)
	fmt.Fprint(l, "one\n\ntwo\nthr")
	fmt.Fprint(l, "ee\nlast")
	l.flush()
	l.flush()
	want := []string{"imaging / into /tmp/x: 2048 MiB, gpt partition 1 at sector 262144", "one", "two", "three", "last"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("log events %q, want %q", got, want)
	}
}
