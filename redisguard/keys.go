package redisguard

// keyspace names the Redis keys of one budget. Every key begins with the
// hash tag {prefix:name}, so that a Cluster keeps them in one slot and a
// script may touch them together.
//
//	{prefix:name}:newest          hash: the newest window seen (key, start, end)
//	{prefix:name}:win:<window>    hash: s (settled), h (held), i:<id> (one hold)
//	{prefix:name}:lease:<window>  sorted set: reservation IDs by lease end (ms, server clock)
//	{prefix:name}:settled         pub/sub channel: a window's name, when money is released there
//
// Money is stored as decimal strings of nano-dollars; windows, IDs and times
// are all there is besides. Nothing of a request (keys, prompts) is stored.
type keyspace struct {
	tag string // "{prefix:name}"
}

func newKeyspace(prefix, name string) keyspace {
	return keyspace{tag: "{" + prefix + ":" + name + "}"}
}

func (k keyspace) newest() string              { return k.tag + ":newest" }
func (k keyspace) window(window string) string { return k.tag + ":win:" + window }
func (k keyspace) leases(window string) string { return k.tag + ":lease:" + window }
func (k keyspace) settledChannel() string      { return k.tag + ":settled" }
