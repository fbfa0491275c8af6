// Package natsx is the project's NATS layer: connecting, provisioning the
// JetStream streams and KV buckets, naming and sizing them (the topology),
// publishing with dedup and trace headers, and reading a subject back. It
// knows no domain: dead letters are shared/deadletter's, the events stream
// as the pusher reads it is shared/eventstream's.
package natsx

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/optout-sync/optout-sync/shared/platform/config"
)

// ConnConfig says how to reach NATS. At most one of the auth methods
// (user/password, token, nkey seed, creds file) is used.
type ConnConfig struct {
	URL         string
	Name        string
	User        string
	Password    string
	Token       string
	NKeySeed    string // path to an nkey seed file
	CredsFile   string // path to a .creds file (JWT + nkey)
	TLSCA       string
	TLSCert     string
	TLSKey      string
	ConnTimeout time.Duration
}

// ConnConfigFromEnv reads the NATS_* variables shared by every service.
func ConnConfigFromEnv(l *config.Loader, name string) ConnConfig {
	c := ConnConfig{
		Name:        name,
		URL:         l.String("NATS_URL", nats.DefaultURL, "NATS server URL(s), comma-separated"),
		User:        l.String("NATS_USER", "", "NATS user (with NATS_PASSWORD)"),
		Password:    l.String("NATS_PASSWORD", "", "NATS password"),
		Token:       l.String("NATS_TOKEN", "", "NATS auth token"),
		NKeySeed:    l.File("NATS_NKEY_SEED_FILE", "path to an nkey seed file"),
		CredsFile:   l.File("NATS_CREDS_FILE", "path to a NATS .creds file"),
		TLSCA:       l.File("NATS_TLS_CA", "CA bundle to verify the NATS server"),
		TLSCert:     l.File("NATS_TLS_CERT", "client certificate for mutual TLS"),
		TLSKey:      l.File("NATS_TLS_KEY", "client key for mutual TLS"),
		ConnTimeout: l.Duration("NATS_CONNECT_TIMEOUT", 5*time.Second, 100*time.Millisecond, time.Minute, "one connection attempt; once connected, reconnects forever with jittered backoff"),
	}
	methods := 0
	for _, set := range []bool{c.User != "", c.Token != "", c.NKeySeed != "", c.CredsFile != ""} {
		if set {
			methods++
		}
	}
	if methods > 1 {
		l.Invalid("NATS_USER", c.User, "set only one of NATS_USER, NATS_TOKEN, NATS_NKEY_SEED_FILE, NATS_CREDS_FILE")
	}
	return c
}

// Connect dials NATS. Once connected it reconnects forever with capped,
// jittered backoff: a broker restart must never stop a worker for good.
func Connect(cfg ConnConfig, log zerolog.Logger) (*nats.Conn, error) {
	opts := []nats.Option{
		nats.Name(cfg.Name),
		nats.MaxReconnects(-1),
		nats.Timeout(orDefault(cfg.ConnTimeout, 5*time.Second)),
		nats.CustomReconnectDelay(reconnectDelay),
		nats.DisconnectErrHandler(func(nc *nats.Conn, err error) {
			// Our own Close at shutdown also lands here, without an error:
			// that is no outage, and a warning would hide real ones.
			if err == nil && nc.IsClosed() {
				return
			}
			log.Warn().Err(err).Msg("nats disconnected")
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info().Str("server", nc.ConnectedUrlRedacted()).Msg("nats reconnected")
		}),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			ev := log.Error().Err(err)
			if sub != nil {
				ev = ev.Str("subject", sub.Subject)
			}
			ev.Msg("nats async error")
		}),
	}
	switch {
	case cfg.User != "":
		opts = append(opts, nats.UserInfo(cfg.User, cfg.Password))
	case cfg.Token != "":
		opts = append(opts, nats.Token(cfg.Token))
	case cfg.NKeySeed != "":
		opt, err := nats.NkeyOptionFromSeed(cfg.NKeySeed)
		if err != nil {
			return nil, fmt.Errorf("nats nkey seed %s: %w", cfg.NKeySeed, err)
		}
		opts = append(opts, opt)
	case cfg.CredsFile != "":
		opts = append(opts, nats.UserCredentials(cfg.CredsFile))
	}
	if cfg.TLSCA != "" {
		opts = append(opts, nats.RootCAs(cfg.TLSCA))
	}
	if cfg.TLSCert != "" || cfg.TLSKey != "" {
		opts = append(opts, nats.ClientCert(cfg.TLSCert, cfg.TLSKey))
	}
	nc, err := nats.Connect(cfg.URL, opts...)
	if err != nil {
		return nil, fmt.Errorf("connect to nats %s: %w", redactURL(cfg.URL), redactErr(err))
	}
	// Said, not refused: an operator upgrading the broker should not find
	// the services down, but must know the durability they rely on is absent.
	if err := CheckServerVersion(nc.ConnectedServerVersion()); err != nil {
		log.Warn().Err(err).Str("server", nc.ConnectedUrlRedacted()).Msg("unsupported nats-server")
	}
	return nc, nil
}

// reconnectDelay backs off 250ms, 500ms, … up to 10s, with ±20% jitter so a
// fleet of workers does not reconnect in lockstep.
func reconnectDelay(attempts int) time.Duration {
	d := 250 * time.Millisecond << min(attempts, 6)
	d = min(d, 10*time.Second)
	return time.Duration(float64(d) * (0.8 + 0.4*rand.Float64()))
}

func orDefault(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

// WaitConnected blocks until nc is connected or ctx ends.
func WaitConnected(ctx context.Context, nc *nats.Conn) error {
	for !nc.IsConnected() {
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for nats: %w", ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
	return nil
}
