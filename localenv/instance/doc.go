// Package instance builds and runs test "instances": a root filesystem served by a real
// OpenSSH sshd, chrooted in its own mount, PID and UTS namespaces inside a network
// namespace of its own, reachable from the host through a veth pair.
//
// It is test and local-environment machinery (the EC2 simulator's RunInstances, the
// agent's SSH tests), Linux only, and needs root. Every name it creates (network
// namespaces, veth links, mount points, state files) starts with Prefix followed by a
// run id unique to the process, so parallel `go test` processes never collide and
// Cleanup can sweep what a crashed run left behind without touching live runs.
//
//	root := t.TempDir()
//	err := instance.BuildLiteRoot(ctx, root)         // ~24 MB busybox + OpenSSH + sudo
//	inst, err := instance.Start(ctx, instance.Config{
//		Root:           root,
//		AuthorizedKeys: map[string]string{"admin": authorizedKeyLine},
//	})
//	defer inst.Stop()
//	client, err := ssh.Dial("tcp", inst.SSHAddr(), cfg) // cfg.HostKeyCallback: ssh.FixedHostKey(inst.HostKey())
package instance
