// Command launch starts an instance of an AMI in the local EC2 environment (or any EC2
// endpoint the AWS environment variables point to), runs one command on it over SSH,
// prints the output and terminates the instance again. `make demo` uses it to show the
// file the template's provisioner wrote into the new AMI.
//
//	go run ./example/local/launch -ami ami-0123 -user admin -- cat /etc/instancestore/demo.txt
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"golang.org/x/crypto/ssh"
)

func main() {
	ami := flag.String("ami", "", "AMI id to launch (required)")
	user := flag.String("user", "admin", "SSH login user")
	itype := flag.String("instance-type", "m3.medium", "instance type")
	timeout := flag.Duration("timeout", 5*time.Minute, "give up after")
	flag.Parse()
	if *ami == "" || flag.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "usage: launch -ami AMI [-user USER] -- COMMAND...")
		os.Exit(2)
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	out, err := run(ctx, *ami, *itype, *user, strings.Join(flag.Args(), " "))
	fmt.Print(out)
	if err != nil {
		fmt.Fprintln(os.Stderr, "launch:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, ami, itype, user, command string) (_ string, err error) {
	cfg, err := config.LoadDefaultConfig(ctx)
	if err != nil {
		return "", err
	}
	c := ec2.NewFromConfig(cfg)
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
	fmt.Fprintf(os.Stderr, "launch: instance %s of %s\n", id, ami)
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
