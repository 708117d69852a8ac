package vm

import "context"

// ProbeKVM is probeKVM for the tests of package vm_test, which get a kernel from
// localenv (which imports this package).
var ProbeKVM = probeKVM

// ChooseAccel is chooseAccel for package vm_test.
func ChooseAccel(override string, reason error) (Accel, error) {
	return chooseAccel(context.Background(), override, "", func(context.Context) error { return reason })
}
