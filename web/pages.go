package web

import (
	"bytes"
	"embed"
	"fmt"
	"html/template"
	"net/http"
	"strconv"
	"strings"
)

//go:embed assets/page.html assets/dashboard.html assets/subrole.css assets/dashboard.js
var assets embed.FS

// pageTemplate is parsed once per Handler (no package-level state).
func pageTemplate() *template.Template {
	return template.Must(template.ParseFS(assets, "assets/page.html"))
}

// dashboardTemplate is the dashboard's page, parsed once per Handler.
func dashboardTemplate() *template.Template {
	return template.Must(template.ParseFS(assets, "assets/dashboard.html"))
}

// page is what the template renders.
type page struct {
	Lang       string
	Kind       string // "ok", "warning" or "error": the accent colour
	Title      string
	Paragraphs []string
	Facts      []fact
	RefLabel   string
	Ref        string
	Close      string
	Style      string
}

type fact struct{ Label, Value string }

// The languages pages are written in.
const (
	langEN = "en"
	langJA = "ja"
)

// language picks Japanese or English from Accept-Language: the supported
// language with the highest q wins, English on a tie or when neither is asked for.
func language(header string) string {
	best, bestQ := langEN, -1.0
	for part := range strings.SplitSeq(header, ",") {
		tag, params, _ := strings.Cut(strings.TrimSpace(part), ";")
		q := 1.0
		if v, ok := strings.CutPrefix(strings.TrimSpace(params), "q="); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				continue
			}
			q = f
		}
		primary, _, _ := strings.Cut(strings.ToLower(strings.TrimSpace(tag)), "-")
		if (primary == langJA || primary == langEN) && q > 0 && q > bestQ {
			best, bestQ = primary, q
		}
	}
	return best
}

// text is one message in both languages; %s verbs take the page's arguments.
type text struct{ en, ja string }

func (t text) in(lang string, args ...any) string {
	s := t.en
	if lang == langJA {
		s = t.ja
	}
	if len(args) == 0 {
		return s
	}
	return fmt.Sprintf(s, args...)
}

// The page texts.
var (
	txtLinkedTitle   = text{"Linked", "連携しました"}
	txtLinked        = text{"Your Discord account %s is now linked to the Twitch account %s.", "Discord アカウント %s を Twitch アカウント %s と連携しました。"}
	txtTwitch        = text{"Twitch account", "Twitch アカウント"}
	txtSubscription  = text{"Subscription", "サブスク"}
	txtNotSubscribed = text{"not subscribed", "サブスクしていません"}
	txtTier          = text{"Tier %d", "ティア %d"}
	txtGift          = text{" (gift)", "（ギフト）"}
	txtRoles         = text{"Roles", "ロール"}
	txtNoRoles       = text{"none", "なし"}
	txtApplying      = text{"Discord is being updated now; your roles appear within a few seconds.", "Discord のロールを更新しています。数秒で反映されます。"}
	txtClose         = text{"You can close this tab.", "このタブは閉じてかまいません。"}
	txtRef           = text{"Reference", "参照番号"}

	txtDeniedTitle = text{"Not linked", "連携していません"}
	txtDenied      = text{"You cancelled the authorization on %s. Nothing was changed. Run /link in Discord again whenever you like.",
		"%s での認可がキャンセルされました。何も変更していません。連携するときは Discord でもう一度 /link を実行してください。"}

	txtBadTitle = text{"This link is not valid", "このリンクは無効です"}
	txtBad      = text{"This link has expired or was already used. Run /link in Discord to get a new one.",
		"このリンクは期限切れか、すでに使われています。Discord で /link を実行して新しいリンクを取得してください。"}
	txtProviderError = text{"%s did not complete the authorization. Nothing was changed. Run /link in Discord to try again.",
		"%s での認可が完了しませんでした。何も変更していません。Discord で /link を実行してやり直してください。"}
	txtProviderDown = text{"%s had a temporary problem and did not complete the authorization. Nothing was changed. Please run /link in Discord again in a few minutes.",
		"%s で一時的な問題が発生し、認可が完了しませんでした。何も変更していません。数分後に Discord でもう一度 /link を実行してください。"}
	txtSetupTitle = text{"This service is not set up correctly", "サービスの設定に問題があります"}
	txtSetup      = text{"%s refused the authorization request because of a setup problem on this service. Nothing was changed. Please tell the server's moderators.",
		"このサービスの設定に問題があるため、%s が認可リクエストを拒否しました。何も変更していません。サーバーのモデレーターに知らせてください。"}

	txtOtherAccountTitle = text{"This link is not yours", "このリンクはあなた用ではありません"}
	txtOtherAccount      = text{"This link was made for another Discord account, so it cannot be used here. Nothing was changed. To get your own roles, run /link yourself in the Discord server.",
		"このリンクは別の Discord アカウント用に作られたため、ここでは使えません。何も変更していません。自分のロールを受け取るには、Discord サーバーで自分で /link を実行してください。"}
	txtOtherBrowserTitle = text{"Open the link from your own /link", "自分の /link から開いてください"}
	txtOtherBrowser      = text{"This link was opened in another browser and only works in the browser where the /link button was pressed. Nothing was changed. Run /link yourself in the Discord server and press the button in this browser.",
		"このリンクは別のブラウザーで開かれたもので、/link のボタンを押したブラウザーでしか使えません。何も変更していません。Discord サーバーで自分で /link を実行し、このブラウザーでボタンを押してください。"}
	txtVoid = text{"This link was opened by another browser or Discord account and can no longer be used. Nothing was changed. Run /link yourself in the Discord server to get a new one.",
		"このリンクは別のブラウザーまたは Discord アカウントで開かれたため、もう使えません。何も変更していません。Discord サーバーで自分で /link を実行して、新しいリンクを取得してください。"}
	txtBusyTitle = text{"Please try again in a few minutes", "数分後にもう一度お試しください"}
	txtBusy      = text{"Too many connection attempts are pending right now. Nothing was changed. Please open this page again in a few minutes.",
		"処理待ちの接続要求が多すぎます。何も変更していません。数分後にもう一度このページを開いてください。"}

	txtConflictTitle = text{"Already linked", "すでに連携されています"}
	txtConflict      = text{"The Twitch account %s is already linked to another Discord member. Nothing was changed. That member can run /unlink, or a moderator can move the link.",
		"Twitch アカウント %s はすでに別の Discord メンバーと連携されています。何も変更していません。そのメンバーが /unlink するか、モデレーターに移動を依頼してください。"}

	txtRetryTitle = text{"Please try again in a minute", "1分ほどしてからもう一度お試しください"}
	txtRetry      = text{"Something went wrong while talking to Discord or Twitch or saving the link. Nothing was changed. Please try again in a minute (the button in Discord works for ten minutes; after that, run /link again).",
		"Discord・Twitch との通信または連携の保存で問題が発生しました。何も変更していません。1分ほどしてからもう一度お試しください（Discord のボタンは10分間有効です。過ぎたら /link をもう一度実行してください）。"}

	txtConnectedTitle = text{"Channel connected", "チャンネルを接続しました"}
	txtConnected      = text{"The channel %s is connected: subrole can now read its subscriptions and keep them in sync.",
		"チャンネル %s を接続しました。subrole はサブスク情報を読み取り、同期できるようになりました。"}
	txtWrongAccountTitle = text{"Wrong Twitch account", "Twitch アカウントが違います"}
	txtWrongAccount      = text{"You logged in as %s, but this service is set up for the channel with ID %s. Nothing was changed. Log out of Twitch, then open this page again and log in with the channel's account.",
		"%s としてログインしましたが、このサービスはチャンネル ID %s 用に設定されています。何も変更していません。Twitch からログアウトし、チャンネルのアカウントでもう一度このページを開いてください。"}
	txtScopeTitle = text{"Permission missing", "権限が不足しています"}
	txtScope      = text{"The authorization did not include permission to read subscriptions. Nothing was changed. Open this page again and approve every permission.",
		"サブスク情報を読み取る権限が許可されませんでした。何も変更していません。もう一度このページを開き、すべての権限を許可してください。"}
)

// The dashboard's texts.
var (
	txtDashTitle          = text{"Live dashboard", "ライブダッシュボード"}
	txtDashSignedIn       = text{"Signed in as %s", "%s としてログイン中"}
	txtDashSignOut        = text{"Sign out", "ログアウト"}
	txtDashCounts         = text{"Now", "現在"}
	txtDashRecent         = text{"Recent changes (newest first)", "最近の変更（新しい順）"}
	txtDashLive           = text{"live", "ライブ"}
	txtDashOffline        = text{"reconnecting…", "再接続中…"}
	txtDashFeedSignedOut  = text{"signed out", "ログアウト済み"}
	txtDashEnded          = text{"The live feed ended (%s). Reload the page to continue.", "ライブ更新が終了しました（%s）。続けるにはページを再読み込みしてください。"}
	txtDashEmpty          = text{"Nothing has happened yet.", "まだ何も起きていません。"}
	txtDashStatus         = text{"Status", "状態"}
	txtDashLinked         = text{"Linked members", "連携メンバー"}
	txtDashInbox          = text{"Inbox (events waiting)", "受信待ち（イベント）"}
	txtDashOutbox         = text{"Outbox (role changes waiting)", "送信待ち（ロール変更）"}
	txtDashFailures       = text{"Role changes failed", "ロール変更の失敗"}
	txtDashMember         = text{"member %s", "メンバー %s"}
	txtDashReconcile      = text{"Last reconcile: %s, %d subscribers, %d drifts fixed, %d members' roles repaired", "前回の照合: %s、サブスク %d 件、差分修正 %d 件、ロール修復 %d 人"}
	txtDashNoReconcile    = text{"No reconcile pass has finished yet.", "照合はまだ完了していません。"}
	txtDashDeniedTitle    = text{"Not allowed", "閲覧できません"}
	txtDashDenied         = text{"You signed in to Twitch as %s (ID %s), who may not see this dashboard. Nothing was changed.", "Twitch に %s（ID %s）としてログインしましたが、このアカウントはダッシュボードを閲覧できません。何も変更していません。"}
	txtDashWho            = text{"Only the channel's broadcaster and the Twitch accounts the operator listed in SUBROLE_DASHBOARD_USERS may see it. Sign out of Twitch and try again with one of those accounts.", "閲覧できるのはチャンネルの配信者と、運営者が SUBROLE_DASHBOARD_USERS に登録した Twitch アカウントだけです。Twitch からログアウトし、それらのアカウントでもう一度お試しください。"}
	txtDashBad            = text{"This sign-in link has expired or was already used. Nothing was changed. Open %s to sign in again.", "このログインリンクは期限切れか、すでに使われています。何も変更していません。%s を開いてもう一度ログインしてください。"}
	txtDashRetry          = text{"Something went wrong while talking to Twitch or reading the database. Nothing was changed. Please try again in a minute.", "Twitch との通信またはデータベースの読み取りで問題が発生しました。何も変更していません。1分ほどしてからもう一度お試しください。"}
	txtDashCancelledTitle = text{"Not signed in", "ログインしていません"}
	txtDashCancelled      = text{"You cancelled the sign-in on Twitch. Nothing was changed. Open %s to try again.", "Twitch でのログインがキャンセルされました。何も変更していません。もう一度 %s を開いてください。"}
	txtDashSignedOutTitle = text{"Signed out", "ログアウトしました"}
	txtDashSignedOut      = text{"Your dashboard session has ended. Open %s to sign in again.", "ダッシュボードのセッションを終了しました。もう一度ログインするには %s を開いてください。"}
)

// render writes p with the security headers every page carries: a CSP that
// allows nothing but the stylesheet, no referrer (the callback URL holds a
// code and a state), no caching, no framing.
func (h *Handler) render(w http.ResponseWriter, status int, p page) {
	p.Style = h.stylePath
	if p.Ref != "" {
		p.RefLabel = txtRef.in(p.Lang)
	}
	var buf bytes.Buffer
	if err := h.tmpl.Execute(&buf, p); err != nil {
		h.log.Error("web: rendering a page failed", "err", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	securityHeaders(w.Header())
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	w.Write(buf.Bytes())
}

func securityHeaders(h http.Header) {
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
}

// Style serves the pages' stylesheet.
func (h *Handler) Style(w http.ResponseWriter, r *http.Request) {
	css, _ := assets.ReadFile("assets/subrole.css")
	securityHeaders(w.Header())
	w.Header().Set("Content-Type", "text/css; charset=utf-8")
	w.Header().Set("Cache-Control", "public, max-age=86400")
	w.Write(css)
}
