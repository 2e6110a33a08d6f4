package main

import (
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"

	"github.com/epost-mail/epost/internal/gateway"
	"github.com/epost-mail/epost/internal/node"
	"github.com/epost-mail/epost/internal/smtpd"
)

// runningGateway is the MX listener of a gateway node.
type runningGateway struct {
	srv *gateway.Server
	ln  net.Listener
	mx  *gateway.DirectMX
}

func (g *runningGateway) Addr() net.Addr { return g.ln.Addr() }

func (g *runningGateway) Close() error {
	err := g.srv.Close()
	if g.mx != nil {
		g.mx.Close()
	}
	return err
}

// startGateway starts the MX (when configured) and builds the outbound
// relay the node's submission server hands outside mail to.
func startGateway(cfg nodeConfig, n *node.Node, tlsCfg *tls.Config, log *slog.Logger) (*runningGateway, *gateway.Outbound, error) {
	g := cfg.Gateway
	if g.Hostname == "" {
		return nil, nil, errors.New("node: [gateway] needs hostname (the MX host name)")
	}
	var keys []gateway.DKIMKey
	if g.DKIMKey != "" {
		signer, err := readSigner(g.DKIMKey)
		if err != nil {
			return nil, nil, fmt.Errorf("node: [gateway] dkim_key: %w", err)
		}
		sel := g.DKIMSelector
		if sel == "" {
			sel = "epost"
		}
		for _, d := range cfg.Domains {
			keys = append(keys, gateway.DKIMKey{Domain: d, Selector: sel, Signer: signer})
		}
	}
	rg := &runningGateway{}
	ob := &gateway.Outbound{Domains: cfg.Domains, Keys: keys}
	if g.Smarthost != "" {
		sh := &smtpd.Smarthost{Addr: g.Smarthost, Hostname: g.Hostname, Username: g.SmarthostUser}
		if g.SmarthostPass != "" {
			pw, err := readPassword(g.SmarthostPass)
			if err != nil {
				return nil, nil, fmt.Errorf("node: [gateway] smarthost_password_file: %w", err)
			}
			sh.Password = pw
		}
		ob.Next = sh
	} else {
		// Queued outside mail is spooled on disk, so a restart loses none.
		rg.mx = &gateway.DirectMX{Resolver: net.DefaultResolver, Hostname: g.Hostname, Log: log,
			Spool: filepath.Join(cfg.Dir, "spool", cfg.Node)}
		ob.Next = rg.mx
	}
	if g.MX == "" {
		// No MX to deliver bounces through: they are logged.
		if rg.mx != nil {
			if _, err := rg.mx.Resume(); err != nil {
				return nil, nil, fmt.Errorf("node: outbound spool: %w", err)
			}
		}
		return nil, ob, nil
	}
	ln, err := net.Listen("tcp", g.MX)
	if err != nil {
		return nil, nil, fmt.Errorf("node: MX on %s: %w", g.MX, err)
	}
	rg.ln = ln
	junk, filter := g.junk()
	rg.srv = gateway.New(gateway.Config{
		Loop: n, Mail: n.Mail, Gateway: g.User, Domains: cfg.Domains, Hostname: g.Hostname,
		TLS: tlsCfg, Resolver: net.DefaultResolver, Log: log, Junk: junk, Filter: filter,
	})
	gwSrv := rg.srv
	n.AddCounters("gateway", func() any { return gwSrv.Stats() })
	if rg.mx != nil {
		srv := rg.srv
		rg.mx.Bounce = func(to string, msg []byte) { _ = srv.Inject([]string{to}, msg) }
		if n, err := rg.mx.Resume(); err != nil {
			return nil, nil, fmt.Errorf("node: outbound spool: %w", err)
		} else if n > 0 {
			log.Info("resuming outbound delivery", "messages", n)
		}
	}
	go func() { _ = rg.srv.Serve(ln) }()
	return rg, ob, nil
}

// readSigner reads a PEM private key (PKCS#8, or PKCS#1 RSA).
func readSigner(path string) (crypto.Signer, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, errors.New("no PEM block")
	}
	if k, err := x509.ParsePKCS8PrivateKey(blk.Bytes); err == nil {
		if s, ok := k.(crypto.Signer); ok {
			return s, nil
		}
	}
	if k, err := x509.ParsePKCS1PrivateKey(blk.Bytes); err == nil {
		return k, nil
	}
	return nil, errors.New("not an Ed25519 or RSA private key")
}

// cmdGateway runs `epost gateway dns`: the records a community publishes
// for its gateway.
func cmdGateway(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "dns" {
		fmt.Fprintln(stderr, "usage: epost gateway dns --domain DOMAIN --mx HOST [--dkim-key FILE] [--selector S] [--dmarc POLICY]")
		return fmt.Errorf("%w: gateway: want the dns subcommand", errUsage)
	}
	flags := newFlagSet("gateway dns", "--domain DOMAIN --mx HOST [--dkim-key FILE] [--selector S] [--dmarc POLICY]", stderr)
	domain := flags.String("domain", "", "the community's mail domain")
	mx := flags.String("mx", "", "the gateway's host name")
	keyFile := flags.String("dkim-key", "", "the gateway's DKIM private key (PEM), to publish its public half")
	sel := flags.String("selector", "epost", "DKIM selector")
	policy := flags.String("dmarc", "quarantine", "DMARC policy: none, quarantine or reject")
	pos, err := parseFlags(flags, args[1:])
	if err != nil {
		return err
	}
	if len(pos) != 0 || *domain == "" || *mx == "" {
		flags.Usage()
		return fmt.Errorf("%w: gateway dns: --domain and --mx are required", errUsage)
	}
	c := gateway.DNSConfig{Domain: *domain, MX: *mx, Selector: *sel, DMARCPolicy: *policy}
	if *keyFile != "" {
		s, err := readSigner(*keyFile)
		if err != nil {
			return fmt.Errorf("gateway dns: %w", err)
		}
		c.Key = s.Public()
	}
	recs, err := gateway.Records(c)
	if err != nil {
		return err
	}
	for _, r := range recs {
		fmt.Fprintln(stdout, r.String())
	}
	return nil
}
