package subrole

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"
)

// OAuthPurpose says what an OAuth round trip is for. It is part of the state
// parameter and of the stored record, so a state minted for one flow cannot
// complete the other.
type OAuthPurpose uint8

// The OAuth purposes.
const (
	// PurposeLink is a member linking their Twitch account (/link).
	PurposeLink OAuthPurpose = 1
	// PurposeBroadcaster is the broadcaster connecting the channel
	// (GET /broadcaster/connect).
	PurposeBroadcaster OAuthPurpose = 2
	// PurposeDashboard is someone signing in to the dashboard
	// (GET /dashboard/login); Twitch only says who they are.
	PurposeDashboard OAuthPurpose = 3
)

// String returns "link", "broadcaster", "dashboard" or "purpose(N)".
func (p OAuthPurpose) String() string {
	switch p {
	case PurposeLink:
		return "link"
	case PurposeBroadcaster:
		return "broadcaster"
	case PurposeDashboard:
		return "dashboard"
	}
	return "purpose(" + strconv.Itoa(int(p)) + ")"
}

// StateTTL is how long an OAuth state stays valid after it is issued.
const StateTTL = 10 * time.Minute

// stateVersion is the first byte of every state token.
const stateVersion = 1

// stateLen is the decoded length of a state: version, purpose, the Discord
// user id as 8 bytes, and 32 random bytes.
const stateLen = 1 + 1 + 8 + 32

// StateToken is the decoded OAuth state parameter. Its Secret is 256 random
// bits; the purpose and the Discord user travel with it so that the callback
// can tell a state used for the wrong flow or rewritten for another member
// from an unknown one. Only a hash of the secret is stored, never the state.
type StateToken struct {
	Purpose       OAuthPurpose
	DiscordUserID uint64 // 0 for PurposeBroadcaster and PurposeDashboard
	Secret        [32]byte
}

// NewStateToken returns a token with a fresh random secret. discordUserID
// must be a Discord snowflake for PurposeLink and empty for
// PurposeBroadcaster and PurposeDashboard.
func NewStateToken(p OAuthPurpose, discordUserID string) (StateToken, error) {
	t := StateToken{Purpose: p}
	switch p {
	case PurposeLink:
		id, err := strconv.ParseUint(discordUserID, 10, 64)
		if err != nil || id == 0 {
			return StateToken{}, fmt.Errorf("subrole: new state: discord user id %q is not a snowflake", discordUserID)
		}
		t.DiscordUserID = id
	case PurposeBroadcaster, PurposeDashboard:
		if discordUserID != "" {
			return StateToken{}, fmt.Errorf("subrole: new state: a %s state has no discord user", p)
		}
	default:
		return StateToken{}, fmt.Errorf("subrole: new state: unknown purpose %d", p)
	}
	rand.Read(t.Secret[:]) // never fails (crypto/rand panics instead)
	return t, nil
}

// String encodes the token as the state parameter: 56 characters of
// unpadded base64url.
func (t StateToken) String() string {
	var b [stateLen]byte
	b[0], b[1] = stateVersion, byte(t.Purpose)
	binary.BigEndian.PutUint64(b[2:10], t.DiscordUserID)
	copy(b[10:], t.Secret[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// Key returns the store key of the token: the hex SHA-256 of its secret.
func (t StateToken) Key() string {
	sum := sha256.Sum256(t.Secret[:])
	return hex.EncodeToString(sum[:])
}

// Discord returns the Discord user id carried by the token, "" when none.
func (t StateToken) Discord() string {
	if t.DiscordUserID == 0 {
		return ""
	}
	return strconv.FormatUint(t.DiscordUserID, 10)
}

// ParseState decodes a state parameter. It fails with an error wrapping
// ErrBadState for anything String could not have produced.
func ParseState(s string) (StateToken, error) {
	if s == "" {
		return StateToken{}, stateErr(ReasonStateMissing)
	}
	if len(s) != base64.RawURLEncoding.EncodedLen(stateLen) {
		return StateToken{}, stateErr(ReasonStateMalformed)
	}
	b, err := base64.RawURLEncoding.Strict().DecodeString(s)
	if err != nil || len(b) != stateLen || b[0] != stateVersion {
		return StateToken{}, stateErr(ReasonStateMalformed)
	}
	t := StateToken{Purpose: OAuthPurpose(b[1]), DiscordUserID: binary.BigEndian.Uint64(b[2:10])}
	copy(t.Secret[:], b[10:])
	switch {
	case t.Purpose == PurposeLink && t.DiscordUserID != 0:
	case (t.Purpose == PurposeBroadcaster || t.Purpose == PurposeDashboard) && t.DiscordUserID == 0:
	default:
		return StateToken{}, stateErr(ReasonStateMalformed)
	}
	return t, nil
}

// OAuthState is a pending OAuth round trip as stored, under the Key of its
// StateToken. A used state is kept, marked, until it expires, so that a
// replay is told apart from a forgery.
//
// A /link state is also bound to one browser and one Discord login before
// Twitch is asked: the browser that opens the /link button gets a random
// cookie whose hash is BrowserHash, and Discord's OAuth, in that browser,
// must name the member who ran /link (DiscordVerified). A state used in any
// other browser, or by another Discord account, is voided.
type OAuthState struct {
	Key           string       `json:"key"`
	Purpose       OAuthPurpose `json:"purpose"`
	DiscordUserID string       `json:"discord_user_id,omitempty"` // who ran /link
	DiscordName   string       `json:"discord_name,omitempty"`    // their username, shown on the result page
	GuildID       string       `json:"guild_id,omitempty"`
	Created       time.Time    `json:"created"`
	Expires       time.Time    `json:"expires"`
	Used          time.Time    `json:"used,omitzero"`
	// BrowserHash is the hex SHA-256 of the cookie that binds a /link state
	// to the browser that opened its button; the cookie itself is never stored.
	BrowserHash string `json:"browser_hash,omitempty"`
	// DiscordVerified is when Discord's OAuth confirmed, in that browser,
	// that the member who ran /link is the one signed in.
	DiscordVerified time.Time `json:"discord_verified,omitzero"`
	// Void, when set, is why the state was voided (Used is then set too):
	// it was refused in the wrong browser or for the wrong Discord account.
	Void string `json:"void,omitempty"`
}

// The most states of each purpose that may be pending at once (used ones
// count until they expire). Beyond MaxPendingLinkStates NewOAuthState
// refuses member states with an error wrapping ErrTooManyStates (they come
// only from Discord interactions); beyond MaxPendingBroadcasterStates (for
// broadcaster and dashboard states alike, each purpose counted apart) it
// expires the oldest state of that purpose instead (they are made by an
// unauthenticated GET, so refusing would let anyone lock the streamer out).
const (
	MaxPendingBroadcasterStates = 200
	MaxPendingLinkStates        = 10000
)

// ErrTooManyStates means too many OAuth round trips of one purpose are
// pending; trying again after a few minutes, when some have expired, works.
var ErrTooManyStates = errors.New("too many pending oauth states")

// The reasons a state is refused, in StateError.Reason.
const (
	ReasonStateMissing      = "missing state"
	ReasonStateMalformed    = "malformed state"
	ReasonStateUnknown      = "unknown state"
	ReasonStateUsed         = "state already used"
	ReasonStateExpired      = "state expired"
	ReasonStateOtherMember  = "state issued to another Discord user"
	ReasonStateOtherPurpose = "state issued for another purpose"
	// ReasonStateVoid: the state was voided by an earlier refusal.
	ReasonStateVoid = "state voided after a refused attempt"
	// ReasonStateOtherBrowser: the request lacks the cookie set by the
	// browser that opened the /link button (a forwarded link).
	ReasonStateOtherBrowser = "state opened in another browser"
	// ReasonStateNoDiscord: Twitch's callback came before Discord confirmed
	// the member in this browser.
	ReasonStateNoDiscord = "state not confirmed with Discord"
	// ReasonStateOtherDiscord: Discord says another account is signed in
	// than the member who ran /link (a forwarded link).
	ReasonStateOtherDiscord = "signed in to Discord as another user"
)

// ErrBadState means an OAuth state parameter was missing, malformed,
// unknown, expired, already used, or issued for someone or something else.
// Errors wrapping it are *StateError values that carry the reason.
var ErrBadState = errors.New("bad oauth state")

// StateError says why a state was refused. It wraps ErrBadState.
type StateError struct {
	Reason string // one of the Reason* constants
}

func (e *StateError) Error() string { return "subrole: bad oauth state: " + e.Reason }

// Unwrap returns ErrBadState.
func (e *StateError) Unwrap() error { return ErrBadState }

func stateErr(reason string) error { return &StateError{Reason: reason} }

// StateReason returns the reason of a state error, or "" if err is not one.
func StateReason(err error) string {
	var se *StateError
	if errors.As(err, &se) {
		return se.Reason
	}
	return ""
}

// BroadcasterToken is the broadcaster's stored authorization: the refresh
// token that keeps it alive and the current access token. Its LogValue hides
// both tokens, so logging one by mistake leaks nothing.
type BroadcasterToken struct {
	UserID       string    `json:"user_id"`
	Login        string    `json:"login,omitempty"`
	AccessToken  string    `json:"access_token"`
	RefreshToken string    `json:"refresh_token"`
	Expires      time.Time `json:"expires,omitzero"` // of the access token
	Scopes       []string  `json:"scopes,omitempty"`
	Connected    time.Time `json:"connected"`          // when the broadcaster authorized
	Refreshed    time.Time `json:"refreshed,omitzero"` // the last refresh
}

// LogValue renders the token without its secrets.
func (t BroadcasterToken) LogValue() slog.Value {
	return slog.GroupValue(slog.String("user_id", t.UserID), slog.String("login", t.Login),
		slog.Time("expires", t.Expires), slog.Any("scopes", t.Scopes))
}

// String renders the token without its secrets.
func (t BroadcasterToken) String() string {
	return fmt.Sprintf("broadcaster token for %s (%s), expires %s, scopes %v", t.Login, t.UserID,
		t.Expires.UTC().Format(time.RFC3339), t.Scopes)
}

// GoString renders the token without its secrets, for %#v.
func (t BroadcasterToken) GoString() string { return t.String() }
