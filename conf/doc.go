// Package conf is the configuration of Posthorn: the posthorn.toml schema,
// the built-in defaults, loading, and validation with FILE:LINE: KEY errors.
package conf
