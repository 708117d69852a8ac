// Package launch looks inside an AMI: it starts an instance, runs one command on it
// over SSH and cleans up again.
package launch

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"golang.org/x/crypto/ssh"
)

// Run launches one instance of ami with a fresh key pair, runs command on it over
// SSH as user and returns its combined output; then it terminates the instance (waiting
// until it is gone) and deletes the key pair, also when something failed. The demo's
// launch command and the acceptance tests use it to look inside a new AMI.
func Run(ctx context.Context, c *ec2.Client, ami, itype, user, command string, logf func(format string, args ...any)) (_ string, err error) {
	kp, err := c.CreateKeyPair(ctx, &ec2.CreateKeyPairInput{KeyName: aws.String(fmt.Sprintf("launch-%d", time.Now().UnixNano()))})
	if err != nil {
		return "", fmt.Errorf("creating a key pair: %w", err)
	}
	defer func() {
		if _, derr := c.DeleteKeyPair(context.Background(), &ec2.DeleteKeyPairInput{KeyName: kp.KeyName}); derr != nil {
			err = errors.Join(err, fmt.Errorf("deleting key pair %s: %w", aws.ToString(kp.KeyName), derr))
		}
	}()
	res, err := c.RunInstances(ctx, &ec2.RunInstancesInput{ImageId: aws.String(ami), InstanceType: types.InstanceType(itype),
		MinCount: aws.Int32(1), MaxCount: aws.Int32(1), KeyName: kp.KeyName})
	if err != nil {
		return "", fmt.Errorf("launching %s: %w", ami, err)
	}
	id := aws.ToString(res.Instances[0].InstanceId)
	logf("instance %s of %s", id, ami)
	defer func() {
		if _, terr := c.TerminateInstances(context.Background(), &ec2.TerminateInstancesInput{InstanceIds: []string{id}}); terr != nil {
			err = errors.Join(err, fmt.Errorf("terminating %s: %w", id, terr))
			return
		}
		w := ec2.NewInstanceTerminatedWaiter(c, func(o *ec2.InstanceTerminatedWaiterOptions) { o.MinDelay, o.MaxDelay = time.Second, 2*time.Second })
		if werr := w.Wait(context.Background(), &ec2.DescribeInstancesInput{InstanceIds: []string{id}}, 2*time.Minute); werr != nil {
			err = errors.Join(err, fmt.Errorf("waiting for %s to terminate: %w", id, werr))
		}
	}()

	var ip string
	for ip == "" {
		d, err := c.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{id}})
		if err != nil {
			return "", err
		}
		in := d.Reservations[0].Instances[0]
		switch in.State.Name {
		case types.InstanceStateNameRunning:
			ip = aws.ToString(in.PrivateIpAddress)
		case types.InstanceStateNamePending:
			time.Sleep(200 * time.Millisecond)
		default:
			return "", fmt.Errorf("instance %s is %s", id, in.State.Name)
		}
	}
	signer, err := ssh.ParsePrivateKey([]byte(aws.ToString(kp.KeyMaterial)))
	if err != nil {
		return "", err
	}
	var cl *ssh.Client
	for {
		cl, err = ssh.Dial("tcp", ip+":22", &ssh.ClientConfig{User: user, Auth: []ssh.AuthMethod{ssh.PublicKeys(signer)},
			HostKeyCallback: ssh.InsecureIgnoreHostKey(), Timeout: 10 * time.Second})
		if err == nil {
			break
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("SSH to %s@%s: %w", user, ip, err)
		case <-time.After(time.Second):
		}
	}
	defer cl.Close()
	sess, err := cl.NewSession()
	if err != nil {
		return "", err
	}
	defer sess.Close()
	b, err := sess.CombinedOutput(command)
	if err != nil {
		return string(b), fmt.Errorf("%s on %s: %w", command, id, err)
	}
	return string(b), nil
}
