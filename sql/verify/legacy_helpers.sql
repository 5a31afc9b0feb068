do $$
begin
  if not coalesce(kbmigrate.legacy_text('["a", "b"]') = 'a, b', false) then
    raise exception '%', 'legacy_text does not join arrays';
  end if;
  if not coalesce(kbmigrate.legacy_text('null') is null and kbmigrate.legacy_text('""') is null, false) then
    raise exception '%', 'legacy_text keeps empty values';
  end if;
  if not coalesce(kbmigrate.legacy_content('{"description": "d", "x": 1, "y": null}', array['X', 'Y'], array['x', 'y'])
                  = E'd\nX: 1', false) then
    raise exception '%', 'legacy_content does not build Label: value lines';
  end if;
end $$;
do $$
begin
  if not coalesce(to_regprocedure('kbmigrate.import_legacy(jsonb)') is not null, false) then
    raise exception '%', 'kbmigrate.import_legacy(jsonb) is missing';
  end if;
  if not coalesce(not has_function_privilege('authenticated', 'kbmigrate.import_legacy(jsonb)', 'execute'), false) then
    raise exception '%', 'the API roles can execute kbmigrate.import_legacy(jsonb)';
  end if;
end $$;
