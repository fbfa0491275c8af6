package config

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strings"
)

// FileStamp names the version of a mounted file: a kubelet Secret update
// swaps a symlink, which changes the size or modification time. It is ""
// for no path and "missing" when the file cannot be read, so a reader
// re-reads the file exactly when its stamp changes.
func FileStamp(path string) string {
	if path == "" {
		return ""
	}
	st, err := os.Stat(path)
	if err != nil {
		return "missing"
	}
	return fmt.Sprintf("%d-%d", st.Size(), st.ModTime().UnixNano())
}

// ColonLines calls fn with each "key:value" line of a secrets file (the
// line trimmed, each side as written), numbered from 1; blank lines and # comments are skipped,
// and a line without ':' comes with ok false. Its caller's errors name the
// line number only: the line holds a secret.
func ColonLines(b []byte, fn func(n int, key, value string, ok bool) error) error {
	sc := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		key, value, ok := strings.Cut(line, ":")
		if err := fn(n, key, value, ok); err != nil {
			return err
		}
	}
	return nil
}
