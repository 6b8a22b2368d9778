%% Minimal assertion macros with EUnit's names, so the tests do not need
%% the erlang-eunit package (not part of a base Debian Erlang install).
%% A failed assertion raises error({Kind, Info}).

-define(assert(Expr),
        ((fun() ->
                  case (Expr) of
                      true -> ok;
                      __V -> erlang:error({assert, [{module, ?MODULE}, {line, ?LINE},
                                                    {expression, ??Expr}, {value, __V}]})
                  end
          end)())).

-define(assertEqual(Expected, Expr),
        (fun(__X, __Y) when __X =:= __Y -> ok;
            (__X, __Y) -> erlang:error({assertEqual, [{module, ?MODULE}, {line, ?LINE},
                                                      {expression, ??Expr},
                                                      {expected, __X}, {value, __Y}]})
         end)(Expected, Expr)).

-define(assertNotEqual(Unexpected, Expr),
        (fun(__X, __Y) when __X =/= __Y -> ok;
            (__X, _) -> erlang:error({assertNotEqual, [{module, ?MODULE}, {line, ?LINE},
                                                       {expression, ??Expr}, {value, __X}]})
         end)(Unexpected, Expr)).

-define(assertMatch(Guard, Expr),
        ((fun() ->
                  case (Expr) of
                      Guard -> ok;
                      __V -> erlang:error({assertMatch, [{module, ?MODULE}, {line, ?LINE},
                                                         {expression, ??Expr},
                                                         {pattern, ??Guard}, {value, __V}]})
                  end
          end)())).

-define(debugFmt(Fmt, Args), io:format(user, "    " ++ Fmt ++ "~n", Args)).

-define(assertNot(Expr), ?assert(not (Expr))).
