module github.com/subrole/subrole

go 1.26.8

require (
	github.com/bwmarrin/discordgo v0.28.1
	github.com/gorilla/mux v1.8.1
	github.com/gorilla/websocket v1.5.3
	go.etcd.io/bbolt v1.4.3
)

require (
	golang.org/x/crypto v0.59.0 // indirect
	golang.org/x/sys v0.50.0 // indirect
)
