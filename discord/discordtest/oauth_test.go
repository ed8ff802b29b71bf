package discordtest_test

import (
	"encoding/json"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"strings"
	"testing"

	"github.com/subrole/subrole/discord/discordtest"
)

func TestOAuthAuthorizePage(t *testing.T) {
	srv := newFake(t, discordtest.Options{ClientSecret: "s3cret"})
	const cb = "http://app.example/cb"
	authorize := func(c *http.Client, params url.Values) *http.Response {
		t.Helper()
		q := url.Values{"client_id": {srv.ApplicationID}, "response_type": {"code"}, "scope": {"identify"},
			"redirect_uri": {cb}, "state": {"xyz"}}
		for k, v := range params {
			q[k] = v
		}
		resp, err := c.Get(srv.AuthorizeURL() + "?" + q.Encode())
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	jar, _ := cookiejar.New(nil)
	browser := &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	if r := authorize(browser, nil); r.StatusCode != http.StatusUnauthorized {
		t.Fatalf("nobody signed in: %d", r.StatusCode)
	}
	srv.SetOAuthUser("400000000000000009")
	other, _ := cookiejar.New(nil)
	srv.LogIn(other, "400000000000000001")
	tests := []struct {
		name   string
		jar    http.CookieJar
		params url.Values
		status int
		want   string // in the Location's query
	}{
		{"the default user", jar, nil, 302, "code="},
		{"a signed-in browser", other, nil, 302, "code="},
		{"unknown application", jar, url.Values{"client_id": {"1"}}, 400, ""},
		{"bad redirect", jar, url.Values{"redirect_uri": {"/relative"}}, 400, ""},
		{"unknown scope", jar, url.Values{"scope": {"identify admin"}}, 302, "error=invalid_scope"},
		{"implicit grant", jar, url.Values{"response_type": {"token"}}, 302, "error=unsupported_response_type"},
	}
	for _, tt := range tests {
		c := &http.Client{Jar: tt.jar, CheckRedirect: browser.CheckRedirect}
		r := authorize(c, tt.params)
		if r.StatusCode != tt.status || !strings.Contains(r.Header.Get("Location"), tt.want) {
			t.Errorf("%s: %d %s", tt.name, r.StatusCode, r.Header.Get("Location"))
		}
		if tt.status == 302 && !strings.Contains(r.Header.Get("Location"), "state=xyz") {
			t.Errorf("%s: no state in %s", tt.name, r.Header.Get("Location"))
		}
	}
	srv.SetOAuthDenying(true)
	if r := authorize(browser, nil); !strings.Contains(r.Header.Get("Location"), "error=access_denied") {
		t.Errorf("denying: %s", r.Header.Get("Location"))
	}
	srv.SetOAuthDenying(false)
	srv.SetRedirectURIs("https://registered.example/cb")
	if r := authorize(browser, nil); r.StatusCode != http.StatusBadRequest {
		t.Errorf("unregistered redirect: %d", r.StatusCode)
	}
	if n := srv.OAuthAuthorizations(); n != 2 {
		t.Errorf("authorizations %d, want 2", n)
	}
}

func TestOAuthTokenEndpoint(t *testing.T) {
	srv := newFake(t, discordtest.Options{ClientSecret: "s3cret"})
	const cb = "http://app.example/cb"
	jar, _ := cookiejar.New(nil)
	srv.LogIn(jar, "400000000000000001")
	c := &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	code := func() string {
		resp, err := c.Get(srv.AuthorizeURL() + "?" + url.Values{"client_id": {srv.ApplicationID}, "response_type": {"code"},
			"scope": {"identify"}, "redirect_uri": {cb}}.Encode())
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		u, _ := url.Parse(resp.Header.Get("Location"))
		return u.Query().Get("code")
	}
	post := func(path string, form url.Values, basic bool, contentType string) (int, map[string]any) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/api/v10"+path, strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", contentType)
		if basic {
			req.SetBasicAuth(srv.ApplicationID, "s3cret")
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body map[string]any
		json.NewDecoder(resp.Body).Decode(&body)
		return resp.StatusCode, body
	}
	const form = "application/x-www-form-urlencoded"
	k := code()
	if st, b := post("/oauth2/token", url.Values{"grant_type": {"authorization_code"}, "code": {k}, "redirect_uri": {cb}}, false, form); st != 401 || b["error"] != "invalid_client" {
		t.Fatalf("no client auth: %d %v", st, b)
	}
	if st, b := post("/oauth2/token", url.Values{"grant_type": {"authorization_code"}, "code": {code()}, "redirect_uri": {cb}}, true, "application/json"); st != 400 || b["error"] != "invalid_request" {
		t.Fatalf("JSON content type: %d %v", st, b)
	}
	if st, b := post("/oauth2/token", url.Values{"grant_type": {"authorization_code"}, "code": {k}, "redirect_uri": {cb}}, true, form); st != 200 {
		t.Fatalf("a code survives an unauthenticated try (HTTP Basic): %d %v", st, b)
	}
	if st, b := post("/oauth2/token", url.Values{"grant_type": {"authorization_code"}, "code": {k}, "redirect_uri": {cb}}, true, form); st != 400 || b["error"] != "invalid_grant" {
		t.Fatalf("a code works once: %d %v", st, b)
	}
	k = code()
	if st, b := post("/oauth2/token", url.Values{"grant_type": {"authorization_code"}, "code": {k}, "redirect_uri": {cb + "x"}}, true, form); st != 400 || b["error"] != "invalid_grant" {
		t.Fatalf("another redirect uri: %d %v", st, b)
	}
	st, tok := post("/oauth2/token", url.Values{"grant_type": {"authorization_code"}, "code": {code()}, "redirect_uri": {cb},
		"client_id": {srv.ApplicationID}, "client_secret": {"s3cret"}}, false, form)
	if st != 200 || tok["token_type"] != "Bearer" || tok["scope"] != "identify" || tok["expires_in"] != float64(604800) || tok["refresh_token"] == "" {
		t.Fatalf("exchange: %d %v", st, tok)
	}
	me := func(auth string) int {
		req, _ := http.NewRequest(http.MethodGet, srv.URL+"/api/v10/users/@me", nil)
		req.Header.Set("Authorization", auth)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if st := me("Bearer " + tok["access_token"].(string)); st != 200 || srv.ValidOAuthTokens("400000000000000001") != 2 {
		t.Fatalf("/users/@me with the token: %d", st)
	}
	post("/oauth2/token/revoke", url.Values{"token": {tok["access_token"].(string)}}, true, form)
	if st := me("Bearer " + tok["access_token"].(string)); st != 401 || srv.ValidOAuthTokens("400000000000000001") != 1 {
		t.Fatalf("/users/@me after revoke: %d", st)
	}
	if st := me("Bot " + token); st != 200 {
		t.Fatalf("/users/@me as the bot: %d", st)
	}
}
