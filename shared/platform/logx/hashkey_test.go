package logx_test

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/optout-sync/optout-sync/shared/platform/config"
	"github.com/optout-sync/optout-sync/shared/platform/logx"
)

// Not parallel: the key is process-wide.
func TestEmailHashIsKeyed(t *testing.T) {
	const addr = "jane.doe@example.com"
	t.Cleanup(func() { logx.SetEmailHashKey([]byte("restore-a-random-looking-key-0000")) })

	logx.SetEmailHashKey([]byte("install-one-key-0123456789"))
	one := logx.HashEmail(addr)
	assert.Regexp(t, `^email:[0-9a-f]{12}$`, one)
	assert.Equal(t, one, logx.HashEmail(" JANE.DOE@example.com "), "same address, same key: same hash")

	logx.SetEmailHashKey([]byte("install-two-key-0123456789"))
	two := logx.HashEmail(addr)
	assert.NotEqual(t, one, two, "another install's key must give another hash")

	logx.SetEmailHashKey([]byte("install-one-key-0123456789"))
	assert.Equal(t, one, logx.HashEmail(addr), "the same key again (a restart) gives the same hash")

	bare := sha256.Sum256([]byte(addr))
	for _, h := range []string{one, two} {
		assert.NotEqual(t, "email:"+hex.EncodeToString(bare[:])[:12], h, "a bare SHA-256 can be reversed with a list of addresses")
	}

	logx.SetEmailHashKey(nil)
	assert.Equal(t, one, logx.HashEmail(addr), "an empty key must not replace the configured one")
}

func TestEmailHashKeyFromEnv(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "key")
	require.NoError(t, os.WriteFile(good, []byte("0123456789abcdef-file\n"), 0o600))
	short := filepath.Join(dir, "short")
	require.NoError(t, os.WriteFile(short, []byte("tiny\n"), 0o600))

	cases := []struct {
		name    string
		env     map[string]string
		want    string
		wantErr string
	}{
		{name: "unset", env: nil},
		{name: "file, trailing newline trimmed", env: map[string]string{logx.EnvEmailHashKeyFile: good}, want: "0123456789abcdef-file"},
		{name: "value", env: map[string]string{logx.EnvEmailHashKey: "0123456789abcdef-value"}, want: "0123456789abcdef-value"},
		{name: "short file", env: map[string]string{logx.EnvEmailHashKeyFile: short}, wantErr: logx.EnvEmailHashKeyFile},
		{name: "missing file", env: map[string]string{logx.EnvEmailHashKeyFile: filepath.Join(dir, "nope")}, wantErr: "no such file"},
		{name: "short value", env: map[string]string{logx.EnvEmailHashKey: "tiny-secret"}, wantErr: "at least 16"},
		{name: "both", env: map[string]string{logx.EnvEmailHashKeyFile: good, logx.EnvEmailHashKey: "0123456789abcdef-value"}, wantErr: "not both"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			l := config.FromMap(c.env)
			got := logx.EmailHashKeyFromEnv(l)
			if c.wantErr != "" {
				require.Error(t, l.Err())
				assert.Contains(t, l.Err().Error(), c.wantErr)
				assert.Nil(t, got)
				// A rejected key value is a secret: the error never echoes it.
				if v := c.env[logx.EnvEmailHashKey]; v != "" {
					assert.False(t, strings.Contains(l.Err().Error(), v), "error echoes the key: %v", l.Err())
				}
				return
			}
			require.NoError(t, l.Err())
			assert.Equal(t, c.want, string(got))
		})
	}
}
