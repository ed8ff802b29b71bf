package discord_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"strings"
	"testing"

	"github.com/subrole/subrole/discord"
	"github.com/subrole/subrole/discord/discordtest"
)

const redirect = "https://subs.example.com/discord_callback"

// authorizeIn opens authURL in a browser signed in to the fake Discord as
// userID and returns the code Discord redirected back with.
func authorizeIn(t *testing.T, srv *discordtest.Server, authURL, userID string) string {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	srv.LogIn(jar, userID)
	c := &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Get(authURL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc, err := url.Parse(resp.Header.Get("Location"))
	if resp.StatusCode != http.StatusFound || err != nil || !strings.HasPrefix(loc.String(), redirect+"?") {
		t.Fatalf("authorize: %d %s", resp.StatusCode, loc)
	}
	if loc.Query().Get("state") != "st4te" {
		t.Fatalf("state not returned: %s", loc)
	}
	return loc.Query().Get("code")
}

func TestOAuthIdentify(t *testing.T) {
	srv := newFake(t)
	srv.SetRedirectURIs(redirect)
	srv.AddMember("400000000000000001", "alice")
	ctx := context.Background()
	o, err := discord.NewOAuth(ctx, discord.OAuthConfig{Origin: srv.URL, BotToken: token, ClientSecret: srv.ClientSecret})
	if err != nil {
		t.Fatal(err)
	}
	if o.ClientID() != srv.ApplicationID {
		t.Fatalf("client id %s, want the application id %s", o.ClientID(), srv.ApplicationID)
	}
	if err := o.CheckSecret(ctx, redirect); err != nil {
		t.Fatalf("check a right secret: %v", err)
	}
	u := o.AuthCodeURL(redirect, "st4te")
	for _, want := range []string{srv.URL + "/oauth2/authorize?", "response_type=code", "client_id=" + srv.ApplicationID,
		"scope=identify", "redirect_uri=" + url.QueryEscape(redirect), "state=st4te"} {
		if !strings.Contains(u, want) {
			t.Errorf("authorize URL %s lacks %s", u, want)
		}
	}
	code := authorizeIn(t, srv, u, "400000000000000001")
	id, name, err := o.Identify(ctx, code, redirect)
	if err != nil || id != "400000000000000001" || name != "alice" {
		t.Fatalf("Identify = %q %q %v", id, name, err)
	}
	if n := srv.ValidOAuthTokens(id); n != 0 {
		t.Errorf("the token was not revoked: %d live", n)
	}
	if _, _, err := o.Identify(ctx, code, redirect); !errors.Is(err, discord.ErrOAuthInvalidGrant) {
		t.Errorf("a code used twice: %v", err)
	}
	if c := srv.CallsMatching("POST", "/oauth2/token"); len(c) == 0 || !strings.HasPrefix(c[0].Path, "/api/v10/") {
		t.Errorf("token calls %+v", c)
	}
}

func TestOAuthFailures(t *testing.T) {
	srv := newFake(t)
	ctx := context.Background()
	wrong, err := discord.NewOAuth(ctx, discord.OAuthConfig{Origin: srv.URL, ClientID: srv.ApplicationID, ClientSecret: "wrong"})
	if err != nil {
		t.Fatal(err)
	}
	err = wrong.CheckSecret(ctx, redirect)
	if !errors.Is(err, discord.ErrOAuthInvalidClient) {
		t.Fatalf("check a wrong secret: %v", err)
	}
	if strings.Contains(err.Error(), "wrong") {
		t.Fatalf("the error shows the secret: %v", err)
	}
	code := authorizeIn(t, srv, wrong.AuthCodeURL(redirect, "st4te"), "400000000000000002")
	if _, _, err := wrong.Identify(ctx, code, redirect); !errors.Is(err, discord.ErrOAuthInvalidClient) {
		t.Fatalf("exchange with a wrong secret: %v", err)
	}

	o, _ := discord.NewOAuth(ctx, discord.OAuthConfig{Origin: srv.URL, ClientID: srv.ApplicationID, ClientSecret: srv.ClientSecret})
	code = authorizeIn(t, srv, o.AuthCodeURL(redirect, "st4te"), "400000000000000002")
	srv.SetOutage(discordtest.Outage500, "/oauth2/token")
	_, _, err = o.Identify(ctx, code, redirect)
	var oe *discord.OAuthError
	if !errors.As(err, &oe) || !oe.Temporary() || oe.Status != 500 {
		t.Fatalf("a 500 from the token endpoint: %v", err)
	}
	srv.Heal()
	if _, err := discord.NewOAuth(ctx, discord.OAuthConfig{Origin: srv.URL, BotToken: "bad", ClientSecret: "x"}); err == nil {
		t.Fatal("read the application id with a bad bot token")
	}
	if _, err := discord.NewOAuth(ctx, discord.OAuthConfig{Origin: srv.URL, BotToken: token}); err == nil {
		t.Fatal("no client secret accepted")
	}
}
