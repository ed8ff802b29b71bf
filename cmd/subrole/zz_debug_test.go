package main
import ("testing";"context";"time";"fmt")
func TestZZOutage(t *testing.T){
  d := &outageDrill{Members: 2000, Rate: 1000, Before: 2*time.Second, Outage: 25*time.Second, After: 2*time.Second, Conns: 64, Dir: t.TempDir()}
  rep, err := d.run(context.Background())
  if err != nil { t.Fatal(err) }
  start := rep.Load.Samples[0].At
  b := map[int]time.Duration{}
  for _, s := range rep.Load.Samples { k := int(s.At.Sub(start)/time.Second); if s.Latency > b[k] { b[k] = s.Latency } }
  out := ""
  for k := 0; k < 30; k++ { out += fmt.Sprintf("%d:%s ", k, ms(b[k])) }
  t.Log(out)
  t.Log(len(rep.Problems))
}
