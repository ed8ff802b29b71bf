package guard

import (
	"net/http"
	"path"
	"strings"
)

// probeSuffixes are file types subrole never serves; asking for one is
// scanning for a vulnerable PHP, ASP or CGI application.
var probeSuffixes = [...]string{".php", ".asp", ".aspx", ".jsp", ".cgi", ".pl", ".env", ".sql", ".bak", ".git"}

// probeSegments are path segments scanners look for.
var probeSegments = [...]string{
	"wp-admin", "wp-login.php", "wp-content", "wp-includes", "wordpress", "xmlrpc.php",
	"phpmyadmin", "pma", "myadmin", "mysqladmin", "adminer", "cgi-bin", "phpunit",
	"actuator", "boaform", "hnap1", "solr", "owa", "autodiscover",
	"passwd", "win.ini", "server-status", "telescope", "_ignition",
}

// probe reports what makes r a request for a well-known attack path, "" if
// nothing: a dot-file or dot-directory other than /.well-known, path
// traversal (also percent-encoded), or a segment or file type from the lists
// above. Twitch and browsers never ask for such paths.
func probe(r *http.Request) string {
	p := r.URL.Path
	raw := strings.ToLower(r.RequestURI)
	switch {
	case strings.Contains(raw, "%2e%2e") || strings.Contains(raw, "..%2f") || strings.Contains(raw, "..%5c") ||
		strings.Contains(raw, "%2e./") || strings.Contains(raw, ".%2e/"):
		return "encoded traversal"
	case strings.Contains(p, "/../") || strings.HasSuffix(p, "/..") || strings.Contains(p, "\\"):
		return "traversal"
	}
	for _, seg := range strings.Split(strings.ToLower(p), "/") {
		if seg == "" {
			continue
		}
		if seg[0] == '.' && seg != ".well-known" {
			return "dot file " + seg
		}
		for _, s := range probeSegments {
			if seg == s {
				return "scanner path " + s
			}
		}
	}
	ext := strings.ToLower(path.Ext(p))
	for _, s := range probeSuffixes {
		if ext == s {
			return "file type " + s
		}
	}
	return ""
}
