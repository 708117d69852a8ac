package localenv

import (
	"path/filepath"
	"reflect"
	"testing"
)

func TestEnvFileRoundTrip(t *testing.T) {
	vars := []Var{{"A", "plain"}, {"B", "it's quoted"}, {"C", ""}, {"D", "x/y+z=="}}
	p := filepath.Join(t.TempDir(), "env")
	if err := WriteEnvFile(p, vars); err != nil {
		t.Fatal(err)
	}
	got, err := ReadEnvFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, vars) {
		t.Fatalf("got %q, want %q", got, vars)
	}
	if want := "export B='it'\\''s quoted'\n"; FormatVars(vars[1:2]) != want {
		t.Fatalf("FormatVars: %q, want %q", FormatVars(vars[1:2]), want)
	}
}
