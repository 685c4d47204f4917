package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/go-viper/mapstructure/v2"
	"github.com/spf13/viper"
)

// EnvPrefix starts the name of every environment variable that overrides a
// key: failover.invite_timeout is SIPBALANCER_FAILOVER_INVITE_TIMEOUT.
const EnvPrefix = "SIPBALANCER"

// Load reads the YAML file at path, overlays the SIPBALANCER_* environment,
// applies the defaults and validates the result. The returned Config is ready
// to use; on error it is nil and the error lists every problem, each naming
// its key.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	c, err := load(data)
	if err != nil {
		var pe parseError
		if errors.As(err, &pe) {
			return nil, fmt.Errorf("config %s: %w", path, err)
		}
		return nil, err
	}
	return c, nil
}

// LoadBytes is Load for a YAML document held in memory. The environment still
// applies.
func LoadBytes(yaml []byte) (*Config, error) {
	return load(yaml)
}

// Default returns a Config with every default applied and no nodes. It does
// not pass Validate until at least one node is added.
func Default() *Config {
	c := &Config{}
	c.applyDefaults()
	return c
}

// parseError marks a document that is not YAML, so Load can name the file.
type parseError struct{ err error }

func (e parseError) Error() string { return "parse yaml: " + e.err.Error() }
func (e parseError) Unwrap() error { return e.err }

func load(data []byte) (*Config, error) {
	v, err := newViper(data)
	if err != nil {
		return nil, err
	}
	c, given, err := decode(v)
	if err != nil {
		return nil, err
	}
	c.applyDefaultsExcept(given)
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return c, nil
}

// newViper holds the YAML document under the environment.
func newViper(data []byte) (*viper.Viper, error) {
	v := viper.New()
	v.SetConfigType("yaml")
	v.SetEnvPrefix(EnvPrefix)
	v.SetEnvKeyReplacer(strings.NewReplacer(".", "_"))
	// Viper consults the environment only for keys it knows, so every key is
	// bound; otherwise a variable could not set a key absent from the file.
	// BindEnv rather than SetDefault keeps "not given" visible to
	// applyDefaults, which must tell an absent key from an explicit zero.
	for _, key := range envKeys() {
		if err := v.BindEnv(key); err != nil {
			return nil, fmt.Errorf("%s: bind environment: %w", key, err)
		}
	}
	if err := v.ReadConfig(bytes.NewReader(data)); err != nil {
		var cpe viper.ConfigParseError
		if errors.As(err, &cpe) {
			err = cpe.Unwrap()
		}
		return nil, parseError{err}
	}
	return v, nil
}

// decode turns viper's merged settings (environment over file) into a Config
// and reports which keys were given. Unknown keys are collected through
// mapstructure's metadata rather than ErrorUnused because the metadata holds
// the full path of each one (nodes[1].wieght), where ErrorUnused names only
// the enclosing section.
func decode(v *viper.Viper) (*Config, map[string]bool, error) {
	var c Config
	md, err := unmarshal(v, &c, decodeHook)
	errs := flattenDecodeErrors(err)
	if err != nil {
		// mapstructure records a section's unknown keys only when the
		// section decoded without error. A second pass that skips bad
		// values instead of failing finds them all, so one run reports
		// every problem.
		md, _ = unmarshal(v, new(Config), func(from, to reflect.Value) (any, error) {
			data, err := decodeHook(from, to)
			if err != nil {
				return nil, nil
			}
			return data, nil
		})
	}
	unused := append([]string(nil), md.Unused...)
	sort.Strings(unused)
	for _, key := range unused {
		errs = append(errs, fmt.Errorf("unknown key %q", key))
	}
	if len(errs) > 0 {
		return nil, nil, errors.Join(errs...)
	}
	given := make(map[string]bool, len(md.Keys))
	for _, key := range md.Keys {
		given[key] = true
	}
	return &c, given, nil
}

func unmarshal(v *viper.Viper, c *Config, hook mapstructure.DecodeHookFuncValue) (mapstructure.Metadata, error) {
	var md mapstructure.Metadata
	err := v.Unmarshal(c, func(dc *mapstructure.DecoderConfig) {
		dc.DecodeHook = hook
		// No weak typing: the hook converts the strings that come from
		// the environment, and nothing else is coerced (a bare 5 is not
		// a duration, true is not a weight).
		dc.WeaklyTypedInput = false
		dc.ErrorUnused = false
		dc.Metadata = &md
	})
	return md, err
}

// flattenDecodeErrors rewrites mapstructure's error tree as one
// "key: problem" error per failed key.
func flattenDecodeErrors(err error) []error {
	var out []error
	var walk func(error)
	walk = func(err error) {
		if err == nil {
			return
		}
		switch e := err.(type) {
		case *mapstructure.DecodeError:
			key := e.Name()
			if key == "" {
				key = "config"
			}
			out = append(out, fmt.Errorf("%s: %w", key, e.Unwrap()))
		case interface{ Unwrap() []error }:
			for _, inner := range e.Unwrap() {
				walk(inner)
			}
		case interface{ Unwrap() error }:
			// mapstructure wraps several errors in "decoding failed
			// due to the following error(s)"; the keys say it better.
			if errors.As(err, new(*mapstructure.DecodeError)) {
				walk(e.Unwrap())
				return
			}
			out = append(out, err)
		default:
			out = append(out, err)
		}
	}
	walk(err)
	return out
}

var durationType = reflect.TypeFor[time.Duration]()

// decodeHook converts a decoded YAML or environment value to the type of its
// field, with errors that say what was wanted; flattenDecodeErrors puts the
// key in front.
func decodeHook(from, to reflect.Value) (any, error) {
	data := from.Interface()
	t := to.Type()
	if t == durationType {
		return toDuration(data)
	}
	switch t.Kind() {
	case reflect.Slice:
		return toList(data, t)
	case reflect.Struct:
		if from.Kind() != reflect.Map && from.Type() != t {
			return nil, fmt.Errorf("want a map of keys, got %s", describe(data))
		}
	case reflect.String:
		return toString(data)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return toInt(data)
	case reflect.Bool:
		return toBool(data)
	case reflect.Float32, reflect.Float64:
		return toFloat(data)
	}
	return data, nil
}

func toDuration(data any) (any, error) {
	switch d := data.(type) {
	case time.Duration:
		return d, nil
	case string:
		v, err := time.ParseDuration(strings.TrimSpace(d))
		if err != nil {
			return nil, fmt.Errorf("want a duration such as 1s, got %q", d)
		}
		return v, nil
	}
	return nil, fmt.Errorf("want a duration such as 1s, got %s", describe(data))
}

// toList accepts a list as is. A string is how the environment writes a list:
// a JSON array for a list of objects (SIPBALANCER_NODES), comma-separated
// values otherwise. A single scalar becomes a list of one.
func toList(data any, t reflect.Type) (any, error) {
	rv := reflect.ValueOf(data)
	switch rv.Kind() {
	case reflect.Slice, reflect.Array:
		return data, nil
	case reflect.Map:
		return nil, fmt.Errorf("want a list, got %s", describe(data))
	case reflect.String:
	default:
		return []any{data}, nil
	}
	s := rv.String()
	if k := t.Elem().Kind(); k == reflect.Struct || k == reflect.Map {
		dec := json.NewDecoder(strings.NewReader(s))
		dec.UseNumber()
		var list []any
		err := dec.Decode(&list)
		if err == nil && dec.Decode(new(any)) != io.EOF {
			err = errors.New("data after the array")
		}
		if err != nil {
			return nil, fmt.Errorf("want a JSON array of objects, got %s: %v", describe(data), err)
		}
		return list, nil
	}
	if strings.TrimSpace(s) == "" {
		return []any{}, nil
	}
	parts := strings.Split(s, ",")
	list := make([]any, len(parts))
	for i, p := range parts {
		list[i] = strings.TrimSpace(p)
	}
	return list, nil
}

// toString accepts scalars, so that `esl_password: 1234` is the password
// "1234" rather than a type error.
func toString(data any) (any, error) {
	switch d := data.(type) {
	case string:
		return d, nil
	case json.Number:
		return d.String(), nil
	case bool:
		return strconv.FormatBool(d), nil
	case float64:
		return strconv.FormatFloat(d, 'f', -1, 64), nil
	}
	rv := reflect.ValueOf(data)
	switch rv.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return strconv.FormatInt(rv.Int(), 10), nil
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return strconv.FormatUint(rv.Uint(), 10), nil
	}
	return nil, fmt.Errorf("want a string, got %s", describe(data))
}

func toInt(data any) (any, error) {
	switch d := data.(type) {
	case string:
		v, err := strconv.Atoi(strings.TrimSpace(d))
		if err != nil {
			return nil, fmt.Errorf("want an integer, got %q", d)
		}
		return v, nil
	case json.Number:
		v, err := strconv.Atoi(d.String())
		if err != nil {
			return nil, fmt.Errorf("want an integer, got %s", d)
		}
		return v, nil
	case float64:
		if d != math.Trunc(d) || math.Abs(d) > 1<<53 {
			return nil, fmt.Errorf("want an integer, got %v", d)
		}
		return int(d), nil
	}
	switch reflect.ValueOf(data).Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return data, nil
	}
	return nil, fmt.Errorf("want an integer, got %s", describe(data))
}

// toFloat accepts numbers, and strings from the environment.
func toFloat(data any) (any, error) {
	switch d := data.(type) {
	case string:
		v, err := strconv.ParseFloat(strings.TrimSpace(d), 64)
		if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
			return nil, fmt.Errorf("want a number, got %q", d)
		}
		return v, nil
	case json.Number:
		v, err := d.Float64()
		if err != nil {
			return nil, fmt.Errorf("want a number, got %s", d)
		}
		return v, nil
	}
	switch reflect.ValueOf(data).Kind() {
	case reflect.Float32, reflect.Float64, reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return data, nil
	}
	return nil, fmt.Errorf("want a number, got %s", describe(data))
}

func toBool(data any) (any, error) {
	switch d := data.(type) {
	case bool:
		return d, nil
	case string:
		v, err := strconv.ParseBool(strings.TrimSpace(d))
		if err != nil {
			return nil, fmt.Errorf("want true or false, got %q", d)
		}
		return v, nil
	}
	return nil, fmt.Errorf("want true or false, got %s", describe(data))
}

// describe renders a decoded value for an error message.
func describe(data any) string {
	switch d := data.(type) {
	case nil:
		return "nothing"
	case string:
		return strconv.Quote(d)
	}
	switch reflect.ValueOf(data).Kind() {
	case reflect.Map, reflect.Struct:
		return "a map"
	case reflect.Slice, reflect.Array:
		return "a list"
	}
	return fmt.Sprint(data)
}

// envKeys lists every key an environment variable may set: each leaf of the
// tree, and nodes as a whole.
func envKeys() []string {
	var keys []string
	walkKeys(reflect.TypeFor[Config](), "", func(key string, _ reflect.Type) {
		keys = append(keys, key)
	})
	return keys
}

// envName is the environment variable that sets key.
func envName(key string) string {
	return EnvPrefix + "_" + strings.ToUpper(strings.ReplaceAll(key, ".", "_"))
}

// walkKeys calls fn with the dotted path and type of every leaf key under t,
// read from the mapstructure tags. A list of objects (nodes) is one leaf.
func walkKeys(t reflect.Type, prefix string, fn func(key string, t reflect.Type)) {
	for i := range t.NumField() {
		f := t.Field(i)
		name := keyName(f)
		if name == "" {
			continue
		}
		key := joinKey(prefix, name)
		if f.Type.Kind() == reflect.Struct && f.Type != durationType {
			walkKeys(f.Type, key, fn)
			continue
		}
		fn(key, f.Type)
	}
}

// keyName is the YAML key of a struct field, or "" for a field that has none.
func keyName(f reflect.StructField) string {
	if !f.IsExported() {
		return ""
	}
	name, _, _ := strings.Cut(f.Tag.Get("mapstructure"), ",")
	if name == "-" {
		return ""
	}
	return name
}

func joinKey(prefix, name string) string {
	if prefix == "" {
		return name
	}
	return prefix + "." + name
}
