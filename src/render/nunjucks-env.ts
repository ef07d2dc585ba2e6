// The only file importing nunjucks. Templates render nginx syntax, so HTML autoescaping is off, and an undefined
// variable is an error rather than an empty string in the config.
import nunjucks from 'nunjucks';
import { fileURLToPath } from 'node:url';
import { SwarmgateError } from '../errors.ts';

export const TEMPLATE_DIR = fileURLToPath(new URL('../../templates/', import.meta.url));

/**
 * An nginx double-quoted string. Backslash and quote are escaped (nginx unescapes exactly these), and control
 * characters are refused outright: no value may end a directive or start a new line of config.
 */
export function nginxQuote(value: unknown): string {
  const text = String(value);
  // eslint-disable-next-line no-control-regex -- control characters are what this check refuses
  if (/[\u0000-\u001f\u007f]/.test(text)) {
    throw new SwarmgateError('ERR_TEMPLATE', 'refusing to quote a value with a control character');
  }
  return `"${text.replace(/\\/g, '\\\\').replace(/"/g, '\\"')}"`;
}

export interface TemplateRenderer {
  render(template: string, context: object): string;
}

export function createTemplateRenderer(templateDir: string = TEMPLATE_DIR): TemplateRenderer {
  const env = new nunjucks.Environment(new nunjucks.FileSystemLoader(templateDir, { noCache: false }), {
    autoescape: false,
    throwOnUndefined: true,
    trimBlocks: true,
    lstripBlocks: true,
  });
  env.addFilter('quote', nginxQuote);
  return {
    render(template, context) {
      try {
        return env.render(template, context);
      } catch (error) {
        throw new SwarmgateError(
          'ERR_TEMPLATE',
          `template ${template} failed: ${(error as Error).message}`,
          { template },
          error,
        );
      }
    },
  };
}
