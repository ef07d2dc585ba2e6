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
  /**
   * The macros a template defines, each returning its text, bound to `context` (the template runs once with it, its
   * output discarded): a part of a large template rendered alone, as often as needed.
   */
  macros(template: string, context: object): Readonly<Record<string, Macro>>;
}

export type Macro = (...args: unknown[]) => string;

/** nunjucks' Template.getExported, which its type declarations leave out. */
interface ExportingTemplate {
  getExported(context: object, callback: (error: Error | null, exported: unknown) => void): void;
}

export function createTemplateRenderer(templateDir: string = TEMPLATE_DIR): TemplateRenderer {
  const env = new nunjucks.Environment(new nunjucks.FileSystemLoader(templateDir, { noCache: false }), {
    autoescape: false,
    throwOnUndefined: true,
    trimBlocks: true,
    lstripBlocks: true,
  });
  env.addFilter('quote', nginxQuote);
  const failed = (template: string, error: unknown): SwarmgateError =>
    new SwarmgateError(
      'ERR_TEMPLATE',
      `template ${template} failed: ${(error as Error).message}`,
      { template },
      error,
    );
  return {
    render(template, context) {
      try {
        return env.render(template, context);
      } catch (error) {
        throw failed(template, error);
      }
    },
    macros(template, context) {
      let exported: Record<string, unknown> = {};
      try {
        // Synchronous: the file loader is, so the callback has run when getExported returns.
        (env.getTemplate(template) as unknown as ExportingTemplate).getExported(context, (error, result) => {
          if (error) throw error;
          exported = result as Record<string, unknown>;
        });
      } catch (error) {
        throw failed(template, error);
      }
      const macros: Record<string, Macro> = {};
      for (const [name, value] of Object.entries(exported)) {
        if (typeof value !== 'function') continue;
        const macro = value as (...args: unknown[]) => unknown;
        macros[name] = (...args) => {
          try {
            // A macro answers with nunjucks' SafeString: its text is the string.
            return String(macro(...args));
          } catch (error) {
            throw failed(template, error);
          }
        };
      }
      return macros;
    },
  };
}
