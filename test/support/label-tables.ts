import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { Parsed } from '../../src/model/labels.ts';

// Label tables shared by the grammar tests (test/unit/labels.test.ts) and the real-nginx check of the rows the
// grammar accepts (test/unit/label-fuzz.test.ts).

// Label table for regexes (VIRTUAL_HOST "~..." and VIRTUAL_PATH "~..."): value | what the grammar says. Each
// refused row is a regex JavaScript compiles but nginx's PCRE refuses or reads differently (found by
// test/unit/label-fuzz.test.ts against the old grammar, with nginx's message beside it).
export const REGEX_TABLE: readonly (readonly [string, RegExp | 'ok'])[] = [
  ['^app\\d+\\.example\\.com$', 'ok'],
  ['^(www|api)\\.example\\.com$', 'ok'],
  ['^(?:a|b)(?=x)(?!y)[a-z0-9.-]{2,5}?\\.test$', 'ok'],
  ['^[\\w.-]+\\.[{}$;#]\\$\\{\\}$', 'ok'],
  ['^[a-z-0][-a][a-][\\]][\\\\][^\\d]$', 'ok'],
  // the duplicate "host" variable / the duplicate "uri" variable
  ['^(?<host>.+)\\.example\\.com$', /named groups are not allowed.*collide/],
  ['^/(?<uri>.*)$', /named groups are not allowed/],
  ['^(?P<n>a)$', /named groups are not allowed/],
  ["^(?'n'a)$", /quote/],
  ['^(?P=n)$', /named groups are not allowed/],
  // lookbehind assertion is not fixed length
  ['^(?<=a+)b\\.example\\.com$', /look-behind/],
  ['^(?<!a)b$', /look-behind/],
  // reference to non-existent subpattern; \k is not followed by a name
  ['^(a)\\1$', /backreferences/],
  ['^\\8$', /backreferences/],
  ['^\\k\\{$', /backreferences/],
  ['^a\\g{1}$', /backreferences/],
  // invalid range in character class
  ['^[\\d-z]$', /range cannot start/],
  ['^[a-\\d]$', /range cannot end/],
  // missing terminating ] for character class ("[^]" and "[]": a member "]" to PCRE, an empty class to JavaScript)
  ['^9[^]>$', /empty class/],
  ['^[]a]$', /empty class/],
  // POSIX collating elements are not supported; [[:alpha:]] means another thing to JavaScript
  ['^[[.a.]]$', /POSIX/],
  ['^[[:alpha:]]$', /POSIX/],
  // POSIX named classes are supported only within a class (found by bench/label-fuzz.ts)
  ['^\\s:(\\d+)\\[[:alpha:]]\\D$', /POSIX/],
  ['^\\d\\[[=a=]]$', /POSIX/],
  ['^[.]com[.]$', 'ok'],
  ['^[:a]$', 'ok'],
  // PCRE2 does not support \F, \L, \l, \N{name}, \U, or \u
  ['^\\L{$', /"\\L" is not allowed/],
  ['^\\u0041$', /"\\u" is not allowed/],
  ['^\\u{41}$', /"\\u" is not allowed/],
  // other escapes PCRE reads differently: \x41 (JavaScript: same, but \x{41}: "x{41}"), \c, \p{L}, \Q..\E, \0
  ['^\\x{41}$', /"\\x" is not allowed/],
  ['^\\p{L}$', /"\\p" is not allowed/],
  ['^\\Qa\\E$', /"\\Q" is not allowed/],
  ['^\\0$', /"\\0" is not allowed/],
  ['^[\\b]$', /"\\b" is not allowed/],
  // PCRE-only syntax
  ['^(?i)a$', /"\(\?i" is not allowed/],
  ['^(?>a)$', /is not allowed/],
  ['^(*UTF)a$', /PCRE verbs/],
  ['^a++$', /possessive/],
  ['^a{,3}$', /"\{,"/],
  // regular expression is too large
  ['^(a{999}){999}$', /too large/],
  ['^a{1001}$', /above 1000/],
  ['^a{2$', /must start a repeat/],
  // bytes, not characters
  ['^é\\.example$', /printable ASCII/],
  ['^a"b$', /quote/],
  ['^a;b c$', /whitespace/],
  ['^a\\', /lone backslash/],
  ['^(a$', /never closed/],
  ['^a)$', /closes no group/],
  ['^*a$', /repeats nothing/],
  ['^[z-a]$', /does not compile/],
];

type Row = readonly [input: string, expected: unknown];

/** Each row: the value, then the parsed value or, for a refusal, a RegExp the reason must match. */
export function labelTable<T>(name: string, parse: (raw: string) => Parsed<T>, rows: readonly Row[]): void {
  test(`label table: ${name}`, () => {
    for (const [input, expected] of rows) {
      const parsed = parse(input);
      if (expected instanceof RegExp) {
        assert.ok(
          !parsed.ok,
          `${name} ${JSON.stringify(input)} should be refused, got ${JSON.stringify(parsed)}`,
        );
        assert.match(parsed.reason, expected, `${name} ${JSON.stringify(input)}`);
      } else {
        assert.ok(parsed.ok, `${name} ${JSON.stringify(input)}: ${parsed.ok ? '' : parsed.reason}`);
        assert.deepEqual(parsed.value, expected, `${name} ${JSON.stringify(input)}`);
      }
    }
  });
}
