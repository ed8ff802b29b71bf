package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"strings"

	"github.com/subrole/subrole/discord/discordtest"
)

// browser is a browser without a screen: it keeps cookies and follows
// redirects, like a member's browser going from the /link button to
// Discord, Twitch and back. signedIn is who is signed in to the fake
// Discord in it ("" nobody).
func (w *world) browser(signedIn string) *http.Client {
	jar, _ := cookiejar.New(nil)
	if signedIn != "" {
		w.discord.LogIn(jar, signedIn)
	}
	return &http.Client{Jar: jar}
}

// browserPage is what a browser ended up on.
type browserPage struct {
	Status int
	URL    string // the final URL after redirects
	Body   string
	Header http.Header
}

// browse loads u in a fresh browser that prefers lang, following redirects.
func browse(ctx context.Context, u, lang string) (browserPage, error) {
	jar, _ := cookiejar.New(nil)
	return browseIn(ctx, &http.Client{Jar: jar}, u, lang)
}

// browseIn loads u in the browser c, following redirects.
func browseIn(ctx context.Context, c *http.Client, u, lang string) (browserPage, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return browserPage{}, err
	}
	if lang != "" {
		req.Header.Set("Accept-Language", lang)
	}
	resp, err := c.Do(req)
	if err != nil {
		return browserPage{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return browserPage{Status: resp.StatusCode, URL: resp.Request.URL.String(), Body: string(body), Header: resp.Header}, err
}

// slashLink has a member run /link in the fake Discord and returns the URL
// of the button in the ephemeral reply.
func (w *world) slashLink(ctx context.Context, discordUserID string) (string, error) {
	in, err := w.discord.SlashCommand(discordUserID, "link")
	if err != nil {
		return "", fmt.Errorf("/link: %w", err)
	}
	m, err := w.discord.WaitForMessage(ctx, func(m discordtest.Message) bool {
		return m.Token == in.Token && m.Kind == discordtest.KindOriginal
	})
	if err != nil {
		return "", fmt.Errorf("/link: no reply: %w", err)
	}
	return buttonURL(m.Components)
}

// buttonURL returns the URL of the first link button in a components array.
func buttonURL(raw json.RawMessage) (string, error) {
	var rows []struct {
		Components []struct {
			Type  int    `json:"type"`
			Style int    `json:"style"`
			URL   string `json:"url"`
		} `json:"components"`
	}
	if err := json.Unmarshal(raw, &rows); err != nil {
		return "", fmt.Errorf("reply components: %w", err)
	}
	for _, r := range rows {
		for _, c := range r.Components {
			if c.Type == 2 && c.Style == 5 && c.URL != "" {
				return c.URL, nil
			}
		}
	}
	return "", errors.New("the reply has no link button")
}

// linkThroughBrowser plays one member's whole /link: the slash command in
// fake Discord, the button opened in the member's own browser (signed in
// to Discord as them), Discord's authorize page, Twitch's authorize page
// approved by twitchUserID (a user of the fake Twitch; "" denies), and the
// redirect back to the service's /twitch_callback. It returns the page the
// browser ends on.
func (w *world) linkThroughBrowser(ctx context.Context, discordUserID, twitchUserID, lang string) (browserPage, error) {
	u, err := w.slashLink(ctx, discordUserID)
	if err != nil {
		return browserPage{}, err
	}
	p, err := w.openButton(ctx, u, discordUserID, twitchUserID, lang)
	if err != nil {
		return p, err
	}
	if !strings.Contains(p.URL, "/twitch_callback") {
		return p, fmt.Errorf("the browser ended on %s, not the callback", p.URL)
	}
	return p, nil
}

// openButton opens a /link button URL in a fresh browser signed in to
// Discord as signedIn, with Twitch approval by twitchUserID ("" denies),
// and returns the page the browser ends on: the member's own button ends on
// /twitch_callback, someone else's is refused on the way.
func (w *world) openButton(ctx context.Context, button, signedIn, twitchUserID, lang string) (browserPage, error) {
	parsed, err := url.Parse(button)
	if err != nil {
		return browserPage{}, err
	}
	w.twitchAPI.AuthorizeAs(parsed.Query().Get("state"), twitchUserID)
	return browseIn(ctx, w.browser(signedIn), button, lang)
}

// connectBroadcaster plays the streamer's one-time authorization: GET
// /broadcaster/connect, approved on the fake Twitch by the broadcaster.
func (w *world) connectBroadcaster(ctx context.Context) (browserPage, error) {
	w.twitchAPI.SetAuthorizingUser(w.twitchAPI.BroadcasterID())
	defer w.twitchAPI.SetAuthorizingUser("")
	return browse(ctx, w.env["SUBROLE_PUBLIC_URL"]+"/broadcaster/connect", "")
}
